// A scrolling spectrogram on a canvas, fed with the `spectrogram` events' columns (each a list of
// `bins` values 0-255, low frequency first; 0 = -90 dBFS, 255 = 0 dBFS). One canvas pixel per
// column and per bin; CSS scales it to the box. New columns enter at the right; the picture
// scrolls left.
//
// Contrast follows the room: the colour scale starts at a slowly tracked background floor (the
// quiet end of recent columns) and spans DISPLAY_RANGE above it, so calls stand out against a
// quiet enclosure and a noisy one alike.

const HISTORY_COLUMNS = 600;
const UNITS_PER_DB = 255 / 90;
const DISPLAY_RANGE = Math.round(40 * UNITS_PER_DB); // 40 dB from floor to the brightest colour
const FLOOR_QUANTILE = 0.2; // a column's floor: its 20th-percentile bin
const FLOOR_RISE = 0.01; // per column: the floor rises slowly (a call must not lift it)...
const FLOOR_FALL = 0.2; // ...and falls quickly when the room gets quieter

// Viridis (perceptually uniform, readable with colour-vision deficiencies), as a few stops
// interpolated into a 256-entry lookup table.
const VIRIDIS_STOPS = [
  [0.0, [68, 1, 84]],
  [0.13, [71, 44, 122]],
  [0.25, [59, 81, 139]],
  [0.38, [44, 113, 142]],
  [0.5, [33, 144, 141]],
  [0.63, [39, 173, 129]],
  [0.75, [92, 200, 99]],
  [0.88, [170, 220, 50]],
  [1.0, [253, 231, 37]],
];

function buildLut() {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i += 1) {
    const t = i / 255;
    let k = 0;
    while (k < VIRIDIS_STOPS.length - 2 && t > VIRIDIS_STOPS[k + 1][0]) k += 1;
    const [t0, c0] = VIRIDIS_STOPS[k];
    const [t1, c1] = VIRIDIS_STOPS[k + 1];
    const f = (t - t0) / (t1 - t0);
    for (let c = 0; c < 3; c += 1) lut[i * 3 + c] = c0[c] + f * (c1[c] - c0[c]);
  }
  return lut;
}

export class Spectrogram {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.lut = buildLut();
    this.bins = 0;
    this.columnsDrawn = 0;
    this.reset(64);
  }

  reset(bins) {
    this.bins = bins;
    this.canvas.width = HISTORY_COLUMNS;
    this.canvas.height = bins;
    this.ctx.fillStyle = `rgb(${this.lut[0]}, ${this.lut[1]}, ${this.lut[2]})`;
    this.ctx.fillRect(0, 0, HISTORY_COLUMNS, bins);
    this.columnsDrawn = 0;
    this.floor = null;
    this.canvas.dataset.columns = "0";
  }

  #trackFloor(column) {
    const sorted = Array.from(column, Number).sort((a, b) => a - b);
    const q = sorted[Math.floor(FLOOR_QUANTILE * (sorted.length - 1))] ?? 0;
    if (this.floor === null) this.floor = q;
    else this.floor += (q - this.floor) * (q > this.floor ? FLOOR_RISE : FLOOR_FALL);
    return this.floor;
  }

  /** Add columns (list of lists of `bins` ints 0-255) at the right edge. */
  push(bins, columns) {
    if (!columns || !columns.length) return;
    if (bins !== this.bins) this.reset(bins);
    const n = Math.min(columns.length, HISTORY_COLUMNS);
    const cols = columns.slice(-n);
    const { ctx } = this;
    // Scroll what is there left by n pixels (drawing a canvas onto itself is allowed).
    ctx.drawImage(this.canvas, n, 0, HISTORY_COLUMNS - n, bins, 0, 0, HISTORY_COLUMNS - n, bins);
    const image = ctx.createImageData(n, bins);
    const { data } = image;
    for (let x = 0; x < n; x += 1) {
      const column = cols[x];
      const floor = this.#trackFloor(column);
      for (let b = 0; b < bins; b += 1) {
        const v = Math.max(0, Math.min(255, Math.round(((column[b] - floor) / DISPLAY_RANGE) * 255)));
        const y = bins - 1 - b; // low frequencies at the bottom
        const o = (y * n + x) * 4;
        data[o] = this.lut[v * 3];
        data[o + 1] = this.lut[v * 3 + 1];
        data[o + 2] = this.lut[v * 3 + 2];
        data[o + 3] = 255;
      }
    }
    ctx.putImageData(image, HISTORY_COLUMNS - n, 0);
    this.columnsDrawn += n;
    this.canvas.dataset.columns = String(this.columnsDrawn);
  }
}
