/* Hongyan console: progressive enhancement only. Every page works without this file; with it:
 * the send form's live counter and preview, auto-refreshing status tables, copy buttons, confirmations
 * and local times. Vanilla JS, no dependencies (the product runs offline). */
(function () {
  "use strict";

  var FETCH_HEADERS = { "X-Console-Fetch": "1" };
  var REFRESH_MS = 2000;
  var DEBOUNCE_MS = 200;

  document.documentElement.classList.add("js");

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  /* Times are rendered in UTC by the server; show them in the browser's time zone. */
  function localizeTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.localized) return;
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
        pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
        (el.hasAttribute("data-precise") ? "." + String(d.getMilliseconds()).padStart(3, "0") : "");
      el.dataset.localized = "1";
    });
  }

  function signedOut(response) {
    if (response.status === 401) {
      window.location.reload(); // the server answers the page itself with a redirect to the login form
      return true;
    }
    return false;
  }

  /* ---- send form: live counter and preview ------------------------------------------------- */
  function setupSendForm(form) {
    var previewBox = document.getElementById("send-preview");
    var busy = document.getElementById("preview-busy");
    var counter = document.getElementById("counter");
    var sequence = 0;
    var controller = null;

    function showMode() {
      var checked = form.querySelector("input[name=recipient_mode]:checked");
      var mode = checked ? checked.value : "list";
      form.querySelectorAll(".mode-panel").forEach(function (panel) {
        panel.classList.toggle("is-hidden", panel.dataset.mode !== mode);
      });
    }

    function showErrors(errors) {
      form.querySelectorAll("[data-error-for]").forEach(function (el) {
        var name = el.dataset.errorFor;
        var problem = errors[name];
        var field = el.closest(".field");
        el.textContent = "";
        if (problem) {
          var title = document.createElement("span");
          title.className = "field-error-title";
          title.textContent = problem.title;
          el.appendChild(title);
          if (problem.detail) {
            var detail = document.createElement("span");
            detail.className = "field-error-detail";
            detail.textContent = " " + problem.detail;
            el.appendChild(detail);
          }
          el.hidden = false;
        } else {
          el.hidden = true;
        }
        if (field && name !== "form") field.classList.toggle("has-error", Boolean(problem));
      });
    }

    function showCounter(values) {
      Object.keys(values).forEach(function (key) {
        var el = counter.querySelector('[data-counter="' + key + '"]');
        if (el) el.textContent = values[key];
      });
      counter.classList.toggle("is-multi", values.segments > 1);
    }

    function refresh() {
      var mine = ++sequence;
      if (controller) controller.abort();
      controller = new AbortController();
      var body = new FormData(form);
      body.delete("action");
      busy.hidden = false;
      fetch(form.dataset.previewUrl, {
        method: "POST", body: body, headers: FETCH_HEADERS, credentials: "same-origin", signal: controller.signal
      }).then(function (response) {
        if (signedOut(response)) return null;
        return response.ok ? response.json() : null;
      }).then(function (data) {
        if (!data || mine !== sequence) return;
        showCounter(data.counter);
        showErrors(data.errors || {});
        previewBox.innerHTML = data.preview_html;
        form.dataset.previewed = String(mine);
      }).catch(function (error) {
        if (error.name !== "AbortError") window.console.error(error);
      }).finally(function () {
        if (mine === sequence) busy.hidden = true;
      });
    }

    var later = debounce(refresh, DEBOUNCE_MS);
    form.addEventListener("input", later);
    form.addEventListener("change", function (event) {
      if (event.target.name === "recipient_mode") showMode();
      later();
    });
    showMode();
    var text = form.querySelector("#text");
    if ((text && text.value) || form.querySelector("#recipients").value || form.querySelector("#table").value) {
      refresh();
    }
  }

  /* ---- fragments that refresh themselves (status tables, timelines, batch counts) ---------- */
  function statusesOf(root) {
    var map = {};
    root.querySelectorAll("[data-id][data-row-status]").forEach(function (row) {
      map[row.dataset.id] = row.dataset.rowStatus;
    });
    return map;
  }

  function setupRefresh(el) {
    var inFlight = false;
    var indicators = document.querySelectorAll("[data-live-indicator]");
    var timer = setInterval(tick, REFRESH_MS);

    function stop() {
      clearInterval(timer);
      el.removeAttribute("data-refresh-url");
      indicators.forEach(function (i) { i.classList.add("is-paused"); });
    }

    function tick() {
      if (inFlight || document.hidden || !el.dataset.refreshUrl) return;
      inFlight = true;
      fetch(el.dataset.refreshUrl, { headers: FETCH_HEADERS, credentials: "same-origin" })
        .then(function (response) {
          if (signedOut(response) || !response.ok) return;
          var final = response.headers.get("X-Console-Final") === "1";
          return response.text().then(function (html) {
            var before = statusesOf(el);
            el.innerHTML = html;
            el.dataset.refreshCount = String(Number(el.dataset.refreshCount || 0) + 1);
            el.querySelectorAll("[data-id][data-row-status]").forEach(function (row) {
              var old = before[row.dataset.id];
              if (old && old !== row.dataset.rowStatus) {
                var badge = row.querySelector(".badge");
                if (badge) badge.classList.add("is-changed");
              }
            });
            localizeTimes(el);
            if (final) stop();
          });
        })
        .catch(function () { /* a missed refresh is retried on the next tick */ })
        .finally(function () { inFlight = false; });
    }
  }

  /* ---- small behaviours --------------------------------------------------------------------- */
  function setupCopy(button) {
    button.addEventListener("click", function () {
      var input = document.querySelector(button.dataset.copy);
      if (!input) return;
      var label = button.textContent;
      function done() {
        button.textContent = button.dataset.copied || label;
        setTimeout(function () { button.textContent = label; }, 2000);
      }
      input.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () {
          document.execCommand("copy");
          done();
        });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(document);
    var sendForm = document.getElementById("send-form");
    if (sendForm) setupSendForm(sendForm);
    document.querySelectorAll("[data-refresh-url]").forEach(setupRefresh);
    document.querySelectorAll("[data-copy]").forEach(setupCopy);
    document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
      form.addEventListener("change", function (event) {
        if (event.target.type === "checkbox") form.requestSubmit();
      });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
    // one button of a form that has several (e.g. "delete selected" next to "add to group")
    document.querySelectorAll("button[data-confirm]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.dataset.confirm)) event.preventDefault();
      });
    });
    document.querySelectorAll("form[data-once]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.classList.contains("is-submitting")) {
          event.preventDefault(); // a double click must not send the batch twice
          return;
        }
        form.classList.add("is-submitting");
      });
    });
  });
})();
