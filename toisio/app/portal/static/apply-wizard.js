/* The application form as a wizard: one step at a time, with Back and Next, the steps listed above with how
   many problems each has, and the focus moved to the step's legend.  Without JavaScript every step shows on one
   page and the same form is submitted: nothing here holds a rule (the server validates). */
(function () {
  "use strict";
  var form = document.getElementById("apply-form");
  var nav = document.getElementById("steps");
  if (!form || !nav) { return; }
  var parts = Array.prototype.slice.call(document.querySelectorAll("[data-step]"));
  var count = 0;
  parts.forEach(function (p) { count = Math.max(count, Number(p.getAttribute("data-step"))); });
  var back = document.getElementById("step-back");
  var next = document.getElementById("step-next");
  var finish = document.getElementById("apply-finish");
  var status = document.getElementById("step-status");
  var current = 1;

  function show(n, focus) {
    current = Math.min(Math.max(1, n), count);
    parts.forEach(function (p) { p.hidden = Number(p.getAttribute("data-step")) !== current; });
    nav.querySelectorAll("a[data-go]").forEach(function (a) {
      if (Number(a.getAttribute("data-go")) === current) { a.setAttribute("aria-current", "step"); }
      else { a.removeAttribute("aria-current"); }
    });
    back.hidden = current === 1;
    next.hidden = current === count;
    finish.hidden = current !== count;
    status.textContent = status.getAttribute("data-template")
      .replace("{n}", String(current)).replace("{count}", String(count));
    if (focus) {
      var legend = document.querySelector("fieldset[data-step='" + current + "'] > legend");
      if (legend) { legend.setAttribute("tabindex", "-1"); legend.focus(); }
    }
  }

  function countProblems() {
    nav.querySelectorAll("[data-problems-of]").forEach(function (badge) {
      var n = badge.getAttribute("data-problems-of");
      var found = document.querySelectorAll("#problems [data-step-of='" + n + "']").length;
      badge.textContent = String(found);
      badge.hidden = found === 0;
    });
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-go]");
    if (!link) { return; }
    event.preventDefault();
    show(Number(link.getAttribute("data-go")), true);
  });
  back.addEventListener("click", function () { show(current - 1, true); });
  next.addEventListener("click", function () { show(current + 1, true); });
  document.body.addEventListener("htmx:afterSwap", countProblems);
  document.documentElement.classList.add("wizard");
  countProblems();
  var first = document.querySelector("#problems [data-step-of]");
  show(first && form.getAttribute("data-returned") ? Number(first.getAttribute("data-step-of")) : 1, false);
}());
