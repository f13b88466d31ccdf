/* Send form: switch between typed text and an approved template, and show the parameter inputs of the
   chosen template (console/send.py renders every template's inputs; only the chosen one is shown). */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("send-form");
    if (!form) return;
    var picker = form.querySelector("#template_id");

    function show() {
      var checked = form.querySelector("input[name=content_mode]:checked");
      var mode = checked ? checked.value : "text";
      form.querySelectorAll(".content-panel").forEach(function (panel) {
        panel.hidden = panel.dataset.content !== mode;
      });
      var chosen = picker ? picker.value : "";
      form.querySelectorAll(".template-params").forEach(function (group) {
        group.hidden = group.dataset.template !== chosen;
      });
    }

    form.addEventListener("change", function (event) {
      if (event.target.name === "content_mode" || event.target === picker) show();
    });
    show();
  });
})();
