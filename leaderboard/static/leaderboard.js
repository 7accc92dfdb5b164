/* privbench leaderboard: sortable tables, the privacy–utility plot switch, details opened by #anchor.
   No library, no network: the page works from disk. */
(function () {
  "use strict";

  /* The sort value of a row's cell in a column: a number, a string, or null (always sorted last). */
  function sortValue(row, column, type) {
    var cell = row.querySelector('[data-col="' + column + '"]');
    var raw = cell ? cell.getAttribute("data-value") : null;
    if (raw === null || raw === "") {
      return null;
    }
    if (type === "text") {
      return raw;
    }
    var number = Number(raw);
    return isNaN(number) ? null : number;
  }

  /* The next direction: numbers start descending (higher first), text ascending; a click toggles. */
  function nextDirection(header, type) {
    var current = header.getAttribute("aria-sort");
    if (current === "descending") {
      return "ascending";
    }
    if (current === "ascending") {
      return "descending";
    }
    return type === "text" ? "ascending" : "descending";
  }

  function sortBy(table, header) {
    var column = header.getAttribute("data-col");
    var type = header.getAttribute("data-type") || "num";
    var direction = nextDirection(header, type);
    var sign = direction === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortValue(a, column, type);
      var y = sortValue(b, column, type);
      if (x === null || y === null) {
        return (x === null) - (y === null);
      }
      return sign * (type === "text" ? x.localeCompare(y) : x - y);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th[data-col]").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction);
  }

  function makeSortable(table) {
    table.querySelectorAll("th[data-col]").forEach(function (header) {
      header.tabIndex = 0;
      header.title = header.title || "sort by this column";
      header.addEventListener("click", function () { sortBy(table, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(table, header);
        }
      });
    });
  }

  /* Show the plot the <select> names, hide the others. */
  function showPlot(select) {
    document.querySelectorAll("[data-plot]").forEach(function (figure) {
      figure.hidden = figure.getAttribute("data-plot") !== select.value;
    });
  }

  /* Open the <details> a link such as #g1-2 points at. */
  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var target = id ? document.getElementById(id) : null;
    if (target && target.tagName === "DETAILS") {
      target.open = true;
    }
  }

  document.querySelectorAll("table.sortable").forEach(makeSortable);
  var choice = document.getElementById("plot-choice");
  if (choice) {
    choice.addEventListener("change", function () { showPlot(choice); });
    showPlot(choice);
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
