// Progressive enhancement only: the page works without this script (the form has a Show
// button). With it, choosing a rule applies the filter at once.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("filters");
  if (!form) { return; }
  var rule = form.querySelector("select[name=rule]");
  rule.addEventListener("change", function () { form.submit(); });
  document.documentElement.classList.add("js");
});
