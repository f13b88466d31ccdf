/* Campaign pages, progressive enhancement only (the form and the pages work without it):
 * - the new-campaign form: clicking a variable inserts {name} at the cursor; only the schedule fields of
 *   the chosen mode (and the weekday / day-of-month fields of the chosen frequency) are shown;
 * - the campaign page: while a run is going, progress.json is polled every 2 s and the runs table's
 *   counts, progress bars and statuses are updated in place. Vanilla JS, CSP-safe (no inline code). */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var SVG = "http://www.w3.org/2000/svg";
  var FETCH_HEADERS = { "X-Console-Fetch": "1" };

  /* ---- the form ------------------------------------------------------------------------------ */
  function insertAtCursor(textarea, text) {
    var start = textarea.selectionStart || 0;
    var end = textarea.selectionEnd || 0;
    textarea.value = textarea.value.slice(0, start) + text + textarea.value.slice(end);
    textarea.focus();
    textarea.setSelectionRange(start + text.length, start + text.length);
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function checkedValue(form, name) {
    var input = form.querySelector("input[name='" + name + "']:checked");
    return input ? input.value : "";
  }

  function setupForm(form) {
    var text = form.querySelector("textarea[name='text']");
    form.querySelectorAll("[data-insert]").forEach(function (button) {
      button.addEventListener("click", function () { insertAtCursor(text, button.dataset.insert); });
    });
    var freq = form.querySelector("select[name='freq']");
    function show() {
      var mode = checkedValue(form, "schedule_mode") || "now";
      form.querySelectorAll("[data-schedule]").forEach(function (panel) {
        panel.hidden = panel.dataset.schedule !== mode;
      });
      form.querySelectorAll("[data-schedule-tz]").forEach(function (el) { el.hidden = mode === "now"; });
      form.querySelectorAll("[data-freq]").forEach(function (panel) {
        panel.hidden = !freq || panel.dataset.freq !== freq.value;
      });
    }
    form.addEventListener("change", show);
    show();
  }

  /* ---- the campaign page: live runs ------------------------------------------------------------ */
  function badge(status, label, prefix) {
    var span = document.createElement("span");
    span.className = "badge " + prefix + status;
    span.dataset.status = status;
    span.textContent = label;
    return span;
  }

  function drawBar(svg, bar) {
    svg.querySelectorAll("rect:not(.status-bar-track)").forEach(function (rect) { rect.remove(); });
    bar.forEach(function (seg) {
      var rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "seg-" + seg[0]);
      rect.setAttribute("x", seg[1]);
      rect.setAttribute("y", "0");
      rect.setAttribute("width", seg[2]);
      rect.setAttribute("height", "4");
      svg.appendChild(rect);
    });
  }

  function updateRun(row, run, labels) {
    var p = run.progress;
    var svg = row.querySelector("[data-bar]");
    if (svg) drawBar(svg, p.bar);
    ["pct", "done", "total"].forEach(function (key) {
      var el = row.querySelector("[data-progress='" + key + "']");
      if (el) el.textContent = String(p[key]);
    });
    var building = row.querySelector("[data-progress-building]");
    if (building) building.hidden = !p.building;
    var statusCell = row.querySelector("[data-run-status] .badge");
    if (statusCell && statusCell.dataset.status !== run.status) {
      var fresh = badge(run.status, labels.campaign[run.status] || run.status, "badge-campaign-");
      fresh.classList.add("is-changed");
      statusCell.replaceWith(fresh);
    }
    var counts = row.querySelector("[data-run-counts]");
    if (counts) {
      var before = {};
      counts.querySelectorAll(".badge").forEach(function (b) { before[b.dataset.status] = true; });
      counts.textContent = "";
      run.count_list.forEach(function (pair) {
        var item = document.createElement("span");
        item.className = "run-count";
        var b = badge(pair[0], labels.message[pair[0]] || pair[0], "badge-");
        if (!before[pair[0]]) b.classList.add("is-changed");
        var n = document.createElement("b");
        n.textContent = String(pair[1]);
        item.appendChild(b);
        item.appendChild(document.createTextNode(" "));
        item.appendChild(n);
        counts.appendChild(item);
      });
    }
    var cost = row.querySelector("[data-run-cost]");
    if (cost) cost.textContent = run.cost;
  }

  function setupLive(section) {
    var labels = JSON.parse(document.getElementById("campaign-labels").textContent);
    var indicator = section.querySelector("[data-live-indicator]");
    var inFlight = false;
    var timer = setInterval(tick, POLL_MS);

    function stop() {
      clearInterval(timer);
      section.removeAttribute("data-progress-url");
      if (indicator) indicator.classList.add("is-paused");
    }

    function apply(data) {
      var known = section.querySelectorAll("tr[data-run-id]").length;
      // a new run, or the campaign changed state (started, completed): the page's buttons change too
      if (data.runs.length !== known || data.campaign.status !== section.dataset.campaignStatus) {
        window.location.reload();
        return;
      }
      data.runs.forEach(function (run) {
        var row = section.querySelector("tr[data-run-id='" + run.id + "']");
        if (row) updateRun(row, run, labels);
      });
      section.dataset.refreshCount = String(Number(section.dataset.refreshCount || 0) + 1);
      if (!data.live) stop();
    }

    function tick() {
      if (inFlight || document.hidden || !section.dataset.progressUrl) return;
      inFlight = true;
      fetch(section.dataset.progressUrl, { headers: FETCH_HEADERS, credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.json() : null;
        })
        .then(function (data) { if (data) apply(data); })
        .catch(function () { /* a missed poll is retried on the next tick */ })
        .finally(function () { inFlight = false; });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("campaign-form");
    if (form) setupForm(form);
    var runs = document.getElementById("campaign-runs");
    if (runs && runs.dataset.progressUrl) setupLive(runs);
  });
})();
