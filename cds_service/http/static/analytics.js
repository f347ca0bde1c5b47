// Progressive enhancement only: the page works without this script (the form has a Show
// button; every table row is in the page). With it, choosing a rule applies the filter at
// once, and long tables are paged (all rows stay reachable, none is cut off).
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("filters");
  if (form) {
    var rule = form.querySelector("select[name=rule]");
    rule.addEventListener("change", function () { form.submit(); });
  }
  document.documentElement.classList.add("js");
  document.querySelectorAll("table[data-page-size]").forEach(function (table) {
    var size = parseInt(table.getAttribute("data-page-size"), 10);
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    if (!size || rows.length <= size) { return; }
    var page = 0;
    var pages = Math.ceil(rows.length / size);
    var pager = document.createElement("div");
    pager.className = "pager";
    var previous = document.createElement("button");
    previous.type = "button";
    previous.textContent = "Previous";
    var next = document.createElement("button");
    next.type = "button";
    next.textContent = "Next";
    var status = document.createElement("span");
    status.setAttribute("aria-live", "polite");
    pager.appendChild(previous);
    pager.appendChild(status);
    pager.appendChild(next);
    function show() {
      rows.forEach(function (row, index) {
        row.hidden = Math.floor(index / size) !== page;
      });
      var first = page * size + 1;
      var last = Math.min(rows.length, first + size - 1);
      status.textContent = "Rows " + first + "–" + last + " of " + rows.length;
      previous.disabled = page === 0;
      next.disabled = page === pages - 1;
    }
    previous.addEventListener("click", function () { if (page > 0) { page -= 1; show(); } });
    next.addEventListener("click", function () { if (page < pages - 1) { page += 1; show(); } });
    table.parentNode.insertBefore(pager, table.nextSibling);
    show();
  });
});
