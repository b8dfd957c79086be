// The probability-over-time chart (uPlot, vendored under web/vendor/uplot, global `uPlot`).
// Series: the running P(success) of the encounter (a thick line) and each call's P(success)
// (dots). The area above 0.5 is tinted blue and labelled "success", below orange "failure".

import { fmtPercent, fmtTime, fmtUnit, t } from "./i18n.js";

const COLORS = {
  running: "#0062a3",
  call: "#333",
  successBand: "rgba(0, 114, 178, 0.08)",
  failureBand: "rgba(230, 159, 0, 0.12)",
  threshold: "#777",
};
const MAX_POINTS = 2000;
const MIN_TIME_SPAN_S = 60;

function clockTicks(u, vals) {
  return vals.map((v) => fmtTime(v * 1000));
}

function minSpan(span) {
  return (u, min, max) => {
    if (min === null || max === null) return [Date.now() / 1000 - span, Date.now() / 1000];
    // A little room on the right, so the newest call and its clock label are not cut off.
    const pad = Math.max(span, max - min) * 0.04;
    return max - min < span ? [max - span, max + pad] : [min, max + pad];
  };
}

function bandsPlugin() {
  return {
    hooks: {
      drawClear: (u) => {
        const { ctx } = u;
        const { left, top, width, height } = u.bbox;
        const mid = u.valToPos(0.5, "y", true);
        ctx.save();
        ctx.fillStyle = COLORS.successBand;
        ctx.fillRect(left, top, width, mid - top);
        ctx.fillStyle = COLORS.failureBand;
        ctx.fillRect(left, mid, width, top + height - mid);
        ctx.strokeStyle = COLORS.threshold;
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.lineWidth = devicePixelRatio;
        ctx.beginPath();
        ctx.moveTo(left, mid);
        ctx.lineTo(left + width, mid);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.font = `${12 * devicePixelRatio}px system-ui, sans-serif`;
        ctx.fillStyle = "#1d4f7a";
        ctx.textAlign = "right";
        ctx.fillText(t("chart.success"), left + width - 6 * devicePixelRatio, top + 14 * devicePixelRatio);
        ctx.fillStyle = "#8a5a00";
        ctx.fillText(t("chart.failure"), left + width - 6 * devicePixelRatio, top + height - 6 * devicePixelRatio);
        ctx.restore();
      },
    },
  };
}

export class ProbabilityChart {
  /**
   * @param {HTMLElement} container the chart fills its width; its height is `height`.
   * @param {{time: boolean, height: number, xLabel: string}} options `time`: x values are Unix
   *   seconds shown as clock times; otherwise seconds into a recording.
   */
  constructor(container, { time = true, height = 260, xLabel = "" } = {}) {
    this.container = container;
    this.xs = [];
    this.calls = [];
    this.running = [];
    const pctAxis = (u, vals) => vals.map((v) => fmtPercent(v));
    const opts = {
      width: Math.max(300, container.clientWidth || 600),
      height,
      plugins: [bandsPlugin()],
      scales: {
        // A few calls seconds apart would otherwise get sub-second clock ticks.
        x: { time, range: time ? minSpan(MIN_TIME_SPAN_S) : undefined },
        y: { range: [0, 1] },
      },
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      axes: [
        {
          label: xLabel || undefined,
          // Clock times (local) for live data, "12 s" into a recording otherwise.
          values: time ? clockTicks : (u, vals) => vals.map((v) => fmtUnit(v, "second")),
          space: time ? 80 : 50,
          stroke: "#444",
          grid: { stroke: "rgba(0,0,0,0.07)" },
        },
        { values: pctAxis, stroke: "#444", size: 48, grid: { stroke: "rgba(0,0,0,0.07)" } },
      ],
      series: [
        { label: time ? t("chart.time") : t("chart.seconds") },
        {
          label: t("chart.running"),
          stroke: COLORS.running,
          width: 3,
          points: { show: false },
          spanGaps: true,
        },
        {
          label: t("chart.each_call"),
          stroke: COLORS.call,
          width: 0,
          paths: () => null,
          points: { show: true, size: 7, fill: "#fff", stroke: COLORS.call, width: 1.5 },
        },
      ],
    };
    this.plot = new uPlot(opts, [[], [], []], container);
    this.resizeObserver = new ResizeObserver(() => this.#fit());
    this.resizeObserver.observe(container);
    this.#publish();
  }

  #fit() {
    const width = Math.floor(this.container.clientWidth);
    if (width > 0 && width !== this.plot.width) {
      this.plot.setSize({ width, height: this.plot.height });
    }
  }

  #publish() {
    // The browser tests read how many calls the chart holds.
    this.container.dataset.points = String(this.xs.length);
    this.container.dataset.last = this.running.length
      ? String(this.running[this.running.length - 1] ?? "")
      : "";
    this.plot.setData([this.xs, this.running, this.calls]);
  }

  /** Replace everything: xs ascending; calls and running P(success) per x (null allowed). */
  setData(xs, calls, running) {
    this.xs = xs.slice(-MAX_POINTS);
    this.calls = calls.slice(-MAX_POINTS);
    this.running = running.slice(-MAX_POINTS);
    this.#publish();
  }

  append(x, call, running) {
    this.xs.push(x);
    this.calls.push(call);
    this.running.push(running);
    if (this.xs.length > MAX_POINTS) {
      this.xs.shift();
      this.calls.shift();
      this.running.shift();
    }
    this.#publish();
  }

  clear() {
    this.setData([], [], []);
  }

  destroy() {
    this.resizeObserver.disconnect();
    this.plot.destroy();
  }
}
