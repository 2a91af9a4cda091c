// The insights board's charts (Chart.js, served from our static files). Every value is written
// on the chart itself, so nothing needs hovering: totals over stacked bars, each point's value
// on a line, the target as a dashed line named in the legend.
(function () {
  "use strict";
  var COLORS = { pos: "#e4572e", app: "#2f6fed", mini_program: "#17a34a", web: "#9b51e0" };
  var FALLBACK = ["#0e7490", "#b54708", "#667085", "#be185d"];
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", "PingFang SC", sans-serif';
  Chart.defaults.font.size = 12;
  Chart.defaults.animation = false;

  function read(id) { return JSON.parse(document.getElementById(id).textContent); }
  function money(v) { return v === null ? "" : Math.round(v).toLocaleString("en-US"); }
  function short(v) {
    if (v === null) return "";
    var a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    return Math.round(v).toLocaleString("en-US");
  }
  function percent(v) { return v === null ? "" : (v * 100).toFixed(1) + "%"; }

  // Writes each stack's total above it (bar charts) or each point's value (line charts).
  var valueLabels = {
    id: "valueLabels",
    afterDatasetsDraw: function (chart, args, options) {
      var ctx = chart.ctx;
      ctx.save();
      ctx.font = "600 11px " + Chart.defaults.font.family;
      ctx.fillStyle = "#1d2330";
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      if (chart.config.type === "bar") {
        var count = chart.data.labels.length;
        for (var i = 0; i < count; i++) {
          var total = 0, top = Infinity, x = null;
          chart.data.datasets.forEach(function (d, k) {
            var meta = chart.getDatasetMeta(k);
            if (meta.hidden || !meta.data[i]) return;
            total += d.data[i] || 0;
            top = Math.min(top, meta.data[i].y);
            x = meta.data[i].x;
          });
          if (x !== null && total) ctx.fillText(short(total), x, top - 3);
        }
      } else {
        chart.data.datasets.forEach(function (d, k) {
          if (d.isTarget) return;
          chart.getDatasetMeta(k).data.forEach(function (point, i) {
            if (d.data[i] !== null) ctx.fillText(options.format(d.data[i]), point.x, point.y - 6);
          });
        });
      }
      ctx.restore();
    }
  };

  var sales = read("sales-data");
  new Chart(document.getElementById("sales-chart"), {
    type: "bar",
    data: {
      labels: sales.labels,
      datasets: sales.datasets.map(function (d, i) {
        return { label: d.label, data: d.data, backgroundColor: COLORS[d.key] || FALLBACK[i % FALLBACK.length] };
      })
    },
    options: {
      maintainAspectRatio: false,
      layout: { padding: { top: 18 } },
      plugins: { legend: { position: "bottom" }, valueLabels: {} },
      scales: {
        x: { stacked: true, title: { display: true, text: "period starting" } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "net sales" },
             ticks: { callback: function (v) { return short(v); } } }
      }
    },
    plugins: [valueLabels]
  });

  read("trends-data").forEach(function (t) {
    var format = t.percent ? percent : money;
    var datasets = [{ label: t.label, data: t.data, borderColor: "#2f6fed", backgroundColor: "#2f6fed",
                      spanGaps: true, tension: 0 }];
    if (t.target !== null) {
      datasets.push({ label: "Target " + format(t.target), data: t.labels.map(function () { return t.target; }),
                      borderColor: "#b54708", borderDash: [6, 4], pointRadius: 0, borderWidth: 2, isTarget: true });
    }
    var values = t.data.filter(function (v) { return v !== null; }).concat(t.target === null ? [] : [t.target]);
    var low = Math.min.apply(null, values.concat([0])), high = Math.max.apply(null, values.concat([0]));
    new Chart(document.getElementById("trend-" + t.key), {
      type: "line",
      data: { labels: t.labels, datasets: datasets },
      options: {
        maintainAspectRatio: false,
        layout: { padding: { top: 18, right: 18 } },
        plugins: { legend: { position: "bottom" }, valueLabels: { format: format } },
        scales: {
          x: { title: { display: true, text: "period starting" } },
          y: { suggestedMin: low, suggestedMax: high + (high - low) * 0.15 || 1,
               title: { display: true, text: t.percent ? "percent" : "value" },
               ticks: { callback: function (v) { return format(v); } } }
        }
      },
      plugins: [valueLabels]
    });
  });
})();
