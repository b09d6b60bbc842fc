// Draw every chart of the page: <div class="chart" data-spec='{"data": [...], "layout": {...}}'>.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("div.chart[data-spec]").forEach(function (el) {
    var spec = JSON.parse(el.dataset.spec);
    Plotly.newPlot(el, spec.data, spec.layout, {displaylogo: false, responsive: true});
  });
  document.body.dataset.chartsReady = "yes";
});
