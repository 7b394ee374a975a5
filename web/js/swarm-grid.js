// A canvas grid of conversation cells, one colour per state. Cheap at 10,000
// cells: a state change only marks its cell dirty, and `draw()` (called once
// per animation frame) repaints the dirty cells grouped by colour.

export const STATES = ["unknown", "idle", "generating", "crashed", "restarting", "failed", "passivated"];
export const STATE_CODE = Object.fromEntries(STATES.map((s, i) => [s, i]));

export class SwarmGrid {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: true });
    this.n = 0;
    this.states = new Uint8Array(0);
    this.dirtyFlag = new Uint8Array(0);
    this.dirty = [];
    this.full = true;
    this.size = 10;
    this.gap = 1;
    this.cols = 1;
    this.width = 0;
    this.colors = [];
    this.readColors();
  }

  readColors() {
    const css = getComputedStyle(document.documentElement);
    this.colors = STATES.map((s) => css.getPropertyValue(`--st-${s}`).trim() || "#888");
    this.full = true;
  }

  /** Grow to `n` cells (new cells start "unknown"); relayout. */
  resize(n) {
    if (n > this.states.length) {
      const states = new Uint8Array(Math.max(n, this.states.length * 2));
      states.set(this.states);
      this.states = states;
      this.dirtyFlag = new Uint8Array(states.length);
    }
    if (n < this.n) this.states.fill(0, n);
    this.n = n;
    this.layout();
  }

  /** Fit the cells to the canvas's width; the height follows. */
  layout() {
    const width = Math.max(200, Math.floor(this.canvas.parentElement.clientWidth));
    const maxHeight = Math.max(220, Math.min(560, Math.round(innerHeight * 0.55)));
    const n = Math.max(1, this.n);
    let size = 28;
    while (size > 3) {
      const cols = Math.floor(width / size);
      if (Math.ceil(n / cols) * size <= maxHeight) break;
      size -= 1;
    }
    this.size = size;
    this.gap = size >= 6 ? 1 : 0;
    this.cols = Math.max(1, Math.floor(width / size));
    const rows = Math.ceil(this.n / this.cols);
    const height = Math.max(1, rows * size);
    const dpr = devicePixelRatio || 1;
    this.width = width;
    this.canvas.style.height = `${height}px`;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.full = true;
  }

  set(i, state) {
    if (this.states[i] === state) return;
    this.states[i] = state;
    if (!this.dirtyFlag[i]) {
      this.dirtyFlag[i] = 1;
      this.dirty.push(i);
    }
  }

  get needsDraw() {
    return this.full || this.dirty.length > 0;
  }

  draw() {
    const { ctx, size, gap, cols, colors, states } = this;
    const cell = size - gap;
    const full = this.full;
    if (full) ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    // One pass per colour (one fillStyle each), no allocation: cells are
    // opaque, so a dirty cell is simply painted over.
    const todo = this.dirty;
    const count = full ? this.n : todo.length;
    for (let s = 0; s < this.colors.length; s++) {
      ctx.fillStyle = colors[s];
      for (let k = 0; k < count; k++) {
        const i = full ? k : todo[k];
        if (states[i] !== s) continue;
        ctx.fillRect((i % cols) * size, Math.floor(i / cols) * size, cell, cell);
      }
    }
    for (const i of todo) this.dirtyFlag[i] = 0;
    this.dirty = [];
    this.full = false;
  }

  /** The cell under a point in CSS pixels relative to the canvas, or -1. */
  cellAt(x, y) {
    const col = Math.floor(x / this.size);
    const row = Math.floor(y / this.size);
    if (col < 0 || col >= this.cols || row < 0) return -1;
    const i = row * this.cols + col;
    return i < this.n ? i : -1;
  }

  cellCenter(i) {
    return {
      x: (i % this.cols) * this.size + this.size / 2,
      y: Math.floor(i / this.cols) * this.size,
    };
  }
}
