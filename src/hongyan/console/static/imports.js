/* Contacts → Import: show a field's name and type only for columns mapped to a custom field (step 2), and
 * poll the import's progress once a second until it ends (step 3), then reload the page for its final
 * state (error-file link). Vanilla JS, loaded from /static (CSP: no inline script). */
(function () {
  "use strict";

  var POLL_MS = 1000;

  function setupMapping() {
    document.querySelectorAll("select[data-import-target]").forEach(function (select) {
      var box = document.querySelector('[data-field-for="' + select.id.replace("col_", "") + '"]');
      if (!box) return;
      function show() { box.classList.toggle("is-hidden", select.value !== "field"); }
      select.addEventListener("change", show);
      show();
    });
  }

  function text(selector, value) {
    var el = document.querySelector(selector);
    if (el) el.textContent = value;
  }

  function setupProgress(card) {
    var url = card.dataset.importProgress;
    var bar = card.querySelector("[data-import-bar]");

    var badge = card.querySelector("[data-import-status]");

    function show(data) {
      var p = data.progress || {};
      var label = badge && badge.getAttribute("data-label-" + data.status);
      if (label) {
        badge.textContent = label;
        badge.className = "badge badge-import-" + data.status;
      }
      if (p.percent !== null && p.percent !== undefined) {
        bar.value = p.percent;
        text("[data-import-percent]", p.percent + " %");
      }
      text("[data-import-rows]", String(data.rows_done));
      if (data.rows_total) text("[data-import-total]", String(data.rows_total));
      text("[data-import-rate]", p.rows_per_s ? String(p.rows_per_s) : "—");
      text("[data-import-eta]", p.eta_s === null || p.eta_s === undefined ? "—" : p.eta_s + " s");
      Object.keys(data.counts || {}).forEach(function (key) {
        text('[data-import-count="' + key + '"]', String(data.counts[key]));
      });
    }

    function poll() {
      fetch(url, { headers: { "X-Console-Fetch": "1" }, credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.json() : null;
        })
        .then(function (data) {
          if (!data) { setTimeout(poll, POLL_MS * 3); return; }
          show(data);
          if (data.status === "queued" || data.status === "running") {
            setTimeout(poll, POLL_MS);
          } else {
            window.location.reload(); // the final page: counts, error file, no cancel button
          }
        })
        .catch(function () { setTimeout(poll, POLL_MS * 3); });
    }

    setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupMapping();
    var card = document.querySelector("[data-import-progress]");
    if (card) setupProgress(card);
  });
})();
