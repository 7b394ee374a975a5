// A small live line chart on a canvas: a rolling window of samples, the
// y axis scaled to the window's maximum, the current value as text beside it
// (so the number is readable without the picture, by anyone).

function niceMax(v) {
  if (v <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * exp) return m * exp;
  return 10 * exp;
}

export class LineChart {
  /**
   * @param {HTMLElement} host an empty element to fill
   * @param {{title: string, colorVar: string, format?: (v: number) => string, window?: number}} options
   */
  constructor(host, { title, colorVar, format = (v) => String(Math.round(v)), window = 90 }) {
    this.format = format;
    this.window = window;
    this.colorVar = colorVar;
    this.values = [];
    const head = document.createElement("div");
    head.className = "chart-head";
    const h = document.createElement("h3");
    h.textContent = title;
    this.valueNode = document.createElement("span");
    this.valueNode.className = "chart-value";
    this.valueNode.textContent = "–";
    head.append(h, this.valueNode);
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("aria-hidden", "true");
    host.append(head, this.canvas);
    this.title = title;
    host.setAttribute("role", "group");
    host.setAttribute("aria-label", title);
    this.dirty = true;
  }

  push(v) {
    this.values.push(Number.isFinite(v) ? v : 0);
    if (this.values.length > this.window) this.values.shift();
    this.valueNode.textContent = this.format(v);
    this.dirty = true;
  }

  draw() {
    if (!this.dirty) return;
    this.dirty = false;
    const canvas = this.canvas;
    const dpr = devicePixelRatio || 1;
    const w = canvas.clientWidth || 240;
    const h = canvas.clientHeight || 90;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const color = css.getPropertyValue(this.colorVar).trim() || "#36c";
    const grid = css.getPropertyValue("--border").trim() || "#ccc";
    const muted = css.getPropertyValue("--muted").trim() || "#666";
    const max = niceMax(Math.max(...this.values, 0));
    const top = 12;
    const plotH = h - top - 2;
    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(top + plotH * f) + 0.5;
      ctx.moveTo(0, y);
      ctx.lineTo(w, y);
    }
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(this.format(max), 2, 0);
    const n = this.values.length;
    if (n < 2) return;
    const step = w / (this.window - 1);
    const x0 = w - (n - 1) * step;
    ctx.beginPath();
    this.values.forEach((v, i) => {
      const x = x0 + i * step;
      const y = top + plotH * (1 - v / max);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.stroke();
    ctx.lineTo(x0 + (n - 1) * step, top + plotH);
    ctx.lineTo(x0, top + plotH);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
  }
}
