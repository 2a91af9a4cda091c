/* Charts of the funnel and attribution pages, drawn by the vendored Chart.js from the figures
   each page embeds as JSON (Django's json_script: <script id="NAME-data"> for <canvas id="NAME">). Readable without
   hovering: axes with titles, a legend, and every bar's value written on it. */
(function () {
  "use strict";
  var palette = ["#2f6fed", "#e4572e", "#17a34a", "#9b51e0", "#b54708", "#0e9384", "#c11574", "#475467"];

  function formatValue(value, kind) {
    if (kind === "money") { return value.toLocaleString("en", { maximumFractionDigits: 0 }); }
    if (kind === "ratio") { return value.toFixed(2) + "×"; }
    return value.toLocaleString("en");
  }

  // Writes each bar's value over it (or inside a horizontal bar's end).
  var barValues = {
    id: "barValues",
    afterDatasetsDraw: function (chart, args, options) {
      var ctx = chart.ctx;
      ctx.save();
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillStyle = "#1d2330";
      chart.data.datasets.forEach(function (dataset, i) {
        var meta = chart.getDatasetMeta(i);
        if (meta.hidden) { return; }
        meta.data.forEach(function (bar, j) {
          var value = dataset.data[j];
          if (value === null || value === undefined) { return; }
          var text = formatValue(value, options.kind);
          if (chart.options.indexAxis === "y") {
            ctx.textAlign = "left"; ctx.textBaseline = "middle";
            ctx.fillText(text, bar.x + 4, bar.y);
          } else {
            ctx.textAlign = "center"; ctx.textBaseline = "bottom";
            ctx.fillText(text, bar.x, bar.y - 2);
          }
        });
      });
      ctx.restore();
    }
  };

  function draw(holder) {
    var spec = JSON.parse(holder.textContent);
    var canvas = document.getElementById(holder.id.replace(/-data$/, ""));
    var datasets = spec.data.datasets.map(function (d, i) {
      return { label: d.label, data: d.data, backgroundColor: palette[i % palette.length] };
    });
    var horizontal = spec.horizontal === true;
    var valueAxis = { beginAtZero: true, grace: "12%", title: { display: true, text: spec.valueTitle } };
    var categoryAxis = { title: { display: true, text: spec.categoryTitle } };
    new window.Chart(canvas, {
      type: "bar",
      data: { labels: spec.data.labels, datasets: datasets },
      options: {
        indexAxis: horizontal ? "y" : "x",
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        layout: { padding: { right: horizontal ? 60 : 8, top: 8 } },
        scales: horizontal ? { x: valueAxis, y: categoryAxis } : { x: categoryAxis, y: valueAxis },
        plugins: {
          legend: { display: true, position: "top" },
          barValues: { kind: spec.kind || "count" },
          tooltip: { enabled: true }
        }
      },
      plugins: [barValues]
    });
    canvas.dataset.drawn = "true";
  }

  document.querySelectorAll('script[type="application/json"][id$="-chart-data"]').forEach(draw);
})();
