// Bar charts drawn as SVG: one bar per time bucket, a value axis with round ticks, a title per
// bar that the browser shows on hover. No library: the console's charts need nothing more.
const NS = "http://www.w3.org/2000/svg";
const W = 560, H = 180, LEFT = 56, BOTTOM = 22, TOP = 8;

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

// points: [{label, value}], format: value -> text
export function barChart(title, points, format = String) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.chart = title;
  figure.append(Object.assign(document.createElement("figcaption"), {textContent: title}));
  const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title});
  const top = niceMax(Math.max(0, ...points.map(p => p.value)));
  const plotH = H - BOTTOM - TOP, plotW = W - LEFT - 4;
  for (let i = 0; i <= 4; i++) {
    const y = TOP + plotH - (plotH * i) / 4;
    svg.append(el("line", {x1: LEFT, x2: W - 4, y1: y, y2: y, class: "grid"}));
    svg.append(el("text", {x: LEFT - 6, y: y + 4, class: "tick", "text-anchor": "end"},
                  format((top * i) / 4)));
  }
  const slot = plotW / Math.max(points.length, 1);
  points.forEach((p, i) => {
    const h = (plotH * p.value) / top;
    const bar = el("rect", {x: LEFT + i * slot + slot * 0.1, y: TOP + plotH - h,
                            width: Math.max(slot * 0.8, 1), height: h, class: "bar"});
    bar.dataset.value = p.value;
    bar.append(el("title", {}, `${p.label}: ${format(p.value)}`));
    svg.append(bar);
  });
  const every = Math.ceil(points.length / 6);
  points.forEach((p, i) => {
    if (i % every === 0) {
      svg.append(el("text", {x: LEFT + i * slot + slot / 2, y: H - 6, class: "tick",
                             "text-anchor": "middle"}, p.short ?? p.label));
    }
  });
  if (!points.length) {
    svg.append(el("text", {x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle"},
                  "no requests in this range"));
  }
  figure.append(svg);
  return figure;
}
