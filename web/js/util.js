// Small DOM and formatting helpers shared by the views. Formatting follows the dashboard's
// language (i18n.js).

import { fmtDateTime, fmtPercent, fmtTime, fmtUnit, t } from "./i18n.js";

/**
 * Create an element: el("td", {class: "num", title: "x"}, "text", childNode, ...).
 * Text is always set as text (names and notes typed by keepers are never parsed as HTML).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A probability as a percentage in the dashboard's locale ("42%"). */
export function pct(p, digits = 0) {
  return fmtPercent(p, digits);
}

export function clockTime(iso) {
  return fmtTime(iso);
}

export function dateTime(iso) {
  return fmtDateTime(iso);
}

/** "1:02:03" or "4:05" from a number of seconds. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

export function secondsBetween(startIso, endIso) {
  const start = Date.parse(startIso);
  const end = endIso ? Date.parse(endIso) : Date.now();
  return Number.isNaN(start) || Number.isNaN(end) ? null : (end - start) / 1000;
}

/** The P(success) range whose verdict is "uncertain"; the service's snapshot sets it
 * (model.uncertain_band, from encounter.uncertain_band). */
let uncertainBand = [0.4, 0.6];

export function setUncertainBand(band) {
  if (Array.isArray(band) && band.length === 2 && band.every(Number.isFinite)) uncertainBand = band;
}

/** Which way a probability of success leans, with the words and icon the UI shows for it:
 * "Uncertain" inside the uncertain band, so a near-chance score never reads as a verdict. */
export function leaning(p, band = uncertainBand) {
  if (p === null || p === undefined || Number.isNaN(p)) {
    return { cls: "none", label: t("verdict.none"), icon: "…" };
  }
  if (band[0] < band[1] && p >= band[0] && p <= band[1]) {
    return { cls: "uncertain", label: t("verdict.uncertain"), icon: "?" };
  }
  return p > 0.5
    ? { cls: "success", label: t("verdict.success"), icon: "✓" }
    : { cls: "failure", label: t("verdict.failure"), icon: "✗" };
}

const VERDICTS = ["success", "failure", "uncertain"];

/** A verdict or outcome ("success", ...) in words; an unknown value as it came. */
export function verdictText(verdict) {
  const v = String(verdict).toLowerCase();
  return VERDICTS.includes(v) ? t(`verdict.${v}`) : String(verdict);
}

/** A badge such as "✓ Success" coloured by class, always with its words (never colour alone). */
export function verdictBadge(verdict, extraClass = "") {
  if (!verdict) return el("span", { class: `badge none ${extraClass}` }, t("verdict.badge_none"));
  const v = String(verdict).toLowerCase();
  const icon = v === "success" ? "✓" : v === "failure" ? "✗" : "?";
  const cls = VERDICTS.includes(v) ? v : "none";
  return el("span", { class: `badge ${cls} ${extraClass}` }, `${icon} ${verdictText(verdict)}`);
}

/** An SVG sparkline of a series (the 86 attention weights of a segment). */
export function sparkline(values, { width = 120, height = 28, cls = "spark" } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", cls);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", t("attn.sparkline"));
  if (!values || values.length < 2) return svg;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const span = hi - lo || 1;
  const pad = 2;
  const pts = values.map((v, i) => {
    const x = (i / (values.length - 1)) * width;
    const y = height - pad - ((v - lo) / span) * (height - 2 * pad);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `0,${height} ${pts.join(" ")} ${width},${height}`);
  area.setAttribute("class", "spark-area");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("class", "spark-line");
  svg.append(area, line);
  return svg;
}

export function formatBytes(n) {
  if (n < 1024) return fmtUnit(n, "byte", 0);
  if (n < 1024 ** 2) return fmtUnit(n / 1024, "kilobyte", 0);
  return fmtUnit(n / 1024 ** 2, "megabyte", 1);
}

const LOGIT_CLIP = 1e-6; // as model/aggregate.py clips a segment's probability

function logOdds(p) {
  const q = Math.min(1 - LOGIT_CLIP, Math.max(LOGIT_CLIP, p));
  return Math.log(q / (1 - q));
}

/**
 * Running P(success) after each segment, by the encounter rule (model/aggregate.py): the mean
 * log-odds of the segments' p_success less the log-odds of `share` (model.class0_share: class
 * 0's share of the segments the model was calibrated on), as a probability; the mean of p_success when
 * `share` is null. `segments` are in time order. When they are only the tail of an encounter
 * (the snapshot holds the last 50 segments), `total` = {n, p} (the encounter's n_segments and
 * p_success) lets each earlier running value be recovered.
 */
export function runningFigures(segments, total, share = null) {
  const rule = Number.isFinite(share) && share > 0 && share < 1;
  const prior = rule ? logOdds(share) : 0;
  const term = (p) => (rule ? logOdds(p) : p);
  const figure = (mean) => (rule ? 1 / (1 + Math.exp(-(mean - prior))) : Math.min(1, Math.max(0, mean)));
  const out = new Array(segments.length).fill(null);
  if (!segments.length) return out;
  if (total && total.n >= segments.length && total.p !== null && total.p !== undefined) {
    let sum = (rule ? logOdds(total.p) + prior : total.p) * total.n;
    let n = total.n;
    for (let i = segments.length - 1; i >= 0; i -= 1) {
      out[i] = n > 0 ? figure(sum / n) : null;
      sum -= term(segments[i].p_success);
      n -= 1;
    }
    return out;
  }
  let sum = 0;
  segments.forEach((seg, i) => {
    sum += term(seg.p_success);
    out[i] = figure(sum / (i + 1));
  });
  return out;
}
