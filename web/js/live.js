// The Live view: encounter header and controls, the gauge, the probability chart, the
// spectrogram and level meters, the scored calls, the latest call's attention, and health.

import { ProbabilityChart } from "./chart.js";
import { clipButton } from "./clips.js";
import {
  errorText, fmtAgo, fmtNumber, fmtPercent, fmtSeconds, fmtUnit, hasKey, t,
} from "./i18n.js";
import { Spectrogram } from "./spectrogram.js";
import {
  $, clockTime, duration, el, leaning, pct, runningFigures, secondsBetween, sparkline, verdictText,
} from "./util.js";

const MAX_CALL_ROWS = 100;
const METER_FLOOR_DB = -60;
const CLIP_DB = -1;
const KEEPER_KEY = "pandapulse.keeper";
const STOP_CONFIRM_MS = 4000;

function meterPercent(db) {
  if (db === null || db === undefined || !Number.isFinite(db)) return 0;
  return Math.max(0, Math.min(100, ((db - METER_FLOOR_DB) / -METER_FLOOR_DB) * 100));
}

function wallSeconds(seg) {
  const t = Date.parse(seg.wall_time);
  return Number.isNaN(t) ? seg.start_s : t / 1000;
}

export class LiveView {
  /** `app` gives: state, api helpers (startEncounter, stopEncounter), clips, reportError. */
  constructor(app) {
    this.app = app;
    this.chart = null;
    this.spectrogram = new Spectrogram($("#spectrogram"));
    this.chartEncounter = undefined;
    this.stopArmed = null;
    this.#wireForm();
    setInterval(() => this.#tickElapsed(), 1000);
  }

  get state() {
    return this.app.state;
  }

  /** The chart is created once the view is visible (uPlot needs a width). */
  ensureChart() {
    if (!this.chart) {
      this.chart = new ProbabilityChart($("#live-chart"), { time: true, height: 330 });
      this.rebuildChart();
    }
  }

  #wireForm() {
    const form = $("#enc-start");
    form.keeper.value = localStorage.getItem(KEEPER_KEY) || "";
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const source = this.state.selectedSource;
      if (!source) return;
      const body = {
        source,
        pair: form.pair.value.trim(),
        keeper: form.keeper.value.trim(),
      };
      const notes = form.notes.value.trim();
      if (notes) body.notes = notes;
      localStorage.setItem(KEEPER_KEY, body.keeper);
      const button = $("#enc-start-btn");
      button.disabled = true;
      this.#formError("");
      try {
        await this.app.startEncounter(body);
        form.notes.value = "";
      } catch (err) {
        this.#formError(errorText(err));
        this.app.reportError(err, null);
      } finally {
        button.disabled = false;
      }
    });
    $("#enc-stop").addEventListener("click", async (event) => {
      const button = event.currentTarget;
      const encounter = this.state.openEncounters.get(this.state.selectedSource);
      if (!encounter) return;
      // Two presses stop it: an accidental tap must not end a breeding encounter's record.
      if (!this.stopArmed) {
        button.textContent = t("live.stop_confirm");
        button.classList.add("armed");
        this.stopArmed = setTimeout(() => this.#disarmStop(), STOP_CONFIRM_MS);
        return;
      }
      this.#disarmStop();
      button.disabled = true;
      try {
        await this.app.stopEncounter(encounter.id);
      } catch (err) {
        this.#formError(errorText(err));
        this.app.reportError(err, null);
      } finally {
        button.disabled = false;
      }
    });
  }

  #disarmStop() {
    clearTimeout(this.stopArmed);
    this.stopArmed = null;
    const button = $("#enc-stop");
    button.textContent = t("live.stop");
    button.classList.remove("armed");
  }

  #formError(message) {
    const p = $("#enc-error");
    p.textContent = message;
    p.hidden = !message;
  }

  // ---------------------------------------------------------------- everything at once ------

  renderAll() {
    this.spectrogram.reset(this.spectrogram.bins || 64);
    $("#spec-source").textContent = this.#sourceLabel();
    this.renderEncounter();
    this.rebuildChart();
    this.renderCalls();
    const latest = this.#segmentsOfSource().at(-1);
    this.renderAttention(latest || null);
    this.renderHealth();
  }

  #sourceLabel() {
    const source = this.state.sources.find((s) => s.id === this.state.selectedSource);
    return source
      ? t("live.source_label", { enclosure: source.enclosure || source.id, kind: sourceKindText(source.kind) })
      : "";
  }

  #segmentsOfSource() {
    return this.state.segments.filter((s) => s.source === this.state.selectedSource);
  }

  // ---------------------------------------------------------------- encounter + gauge -------

  renderEncounter() {
    const encounter = this.state.openEncounters.get(this.state.selectedSource) || null;
    const source = this.state.sources.find((s) => s.id === this.state.selectedSource);
    const info = $("#enc-info");
    info.replaceChildren();
    const enclosure = encounter?.enclosure || source?.enclosure || this.state.selectedSource || "–";
    if (encounter) {
      info.append(
        el("div", { class: "enc-title" },
          el("span", { class: "pill live", "data-testid": "enc-status" }, t("live.open")),
          el("h1", {}, enclosure),
          encounter.auto ? el("span", { class: "pill muted", title: t("live.auto_title") }, t("live.auto")) : null),
        el("dl", { class: "enc-facts" },
          el("div", {}, el("dt", {}, t("live.pair")), el("dd", { "data-testid": "enc-pair" }, encounter.pair || "–")),
          el("div", {}, el("dt", {}, t("live.keeper")), el("dd", {}, encounter.keeper || "–")),
          el("div", {}, el("dt", {}, t("live.started")), el("dd", {}, clockTime(encounter.started_at))),
          el("div", {}, el("dt", {}, t("live.elapsed")), el("dd", { class: "elapsed", id: "enc-elapsed" },
            duration(secondsBetween(encounter.started_at, encounter.ended_at)))),
          el("div", {}, el("dt", {}, t("live.calls")), el("dd", { id: "enc-calls" }, fmtNumber(encounter.n_segments ?? 0)))),
      );
    } else {
      info.append(
        el("div", { class: "enc-title" },
          el("span", { class: "pill idle", "data-testid": "enc-status" }, t("live.no_open")),
          el("h1", {}, enclosure)),
        el("p", { class: "muted" }, source ? t("live.idle_hint") : t("live.waiting_service")),
      );
    }
    $("#enc-start").hidden = Boolean(encounter) || !source;
    $("#enc-actions").hidden = !encounter;
    this.renderGauge(encounter);
  }

  #tickElapsed() {
    const encounter = this.state.openEncounters.get(this.state.selectedSource);
    const node = document.getElementById("enc-elapsed");
    if (encounter && node) {
      node.textContent = duration(secondsBetween(encounter.started_at, encounter.ended_at));
    }
  }

  renderGauge(encounter) {
    const p = encounter ? encounter.p_success : null;
    const lean = leaning(p);
    const card = $("#gauge-card");
    card.dataset.p = p === null || p === undefined ? "" : String(p);
    card.classList.toggle("stale", this.app.connection !== "open");
    const value = $("#gauge-value");
    value.textContent = p === null || p === undefined ? "—" : fmtPercent(Math.round(p * 100) / 100);
    value.className = `gauge-value ${lean.cls}`;
    const label = $("#gauge-label");
    label.textContent = encounter
      ? p === null || p === undefined
        ? t("gauge.waiting_calls")
        : lean.cls === "uncertain"
          ? t("gauge.uncertain")
          : t(`gauge.leaning_${lean.cls}`)
      : t("gauge.no_open");
    label.className = `gauge-label ${lean.cls}`;
    const angle = p === null || p === undefined ? 0 : (p - 0.5) * 180;
    $("#gauge-needle").style.transform = `rotate(${angle}deg)`;
    $("#gauge-needle").classList.toggle("idle", p === null || p === undefined);
    const ps = p ?? 0.5;
    $("#split-success").style.width = `${ps * 100}%`;
    $("#split-failure").style.width = `${(1 - ps) * 100}%`;
    $("#gauge-ps").textContent = pct(p);
    $("#gauge-pf").textContent = p === null || p === undefined ? "–" : pct(1 - p);
    const verdict = $("#gauge-verdict");
    if (!encounter) verdict.textContent = "";
    else if (encounter.verdict) {
      verdict.replaceChildren(t("gauge.verdict_label"),
        el("b", { class: encounter.verdict }, verdictText(encounter.verdict)),
        t("gauge.after_calls", { n: encounter.n_segments ?? 0 }));
    } else {
      verdict.textContent = t("gauge.pending", { n: encounter.n_segments ?? 0 });
    }
  }

  // ---------------------------------------------------------------- chart ------------------

  #chartSegments() {
    const encounter = this.state.openEncounters.get(this.state.selectedSource) || null;
    const segments = this.#segmentsOfSource();
    return {
      encounter,
      segments: encounter ? segments.filter((s) => s.encounter_id === encounter.id) : segments,
    };
  }

  rebuildChart() {
    if (!this.chart) return;
    const { encounter, segments } = this.#chartSegments();
    this.chartEncounter = encounter ? encounter.id : null;
    let running;
    if (encounter) {
      const total = { n: encounter.n_segments, p: encounter.p_success };
      const derived = runningFigures(segments, total, this.app.state.model?.class0_share ?? null);
      running = segments.map((s, i) => s.running_p_success ?? derived[i]);
    } else {
      running = segments.map((s) => s.running_p_success ?? null);
    }
    this.chart.setData(segments.map(wallSeconds), segments.map((s) => s.p_success), running);
  }

  // ---------------------------------------------------------------- calls ------------------

  #callRow(seg) {
    const lean = leaning(seg.p_success);
    return el("tr", {
      class: "pickable",
      title: t("calls.show_attention"),
      dataset: { segmentId: String(seg.id) },
      onclick: () => this.renderAttention(seg),
    },
      el("td", {}, clockTime(seg.wall_time)),
      el("td", { class: "num" }, fmtSeconds(seg.end_s - seg.start_s, 1)),
      el("td", { class: "num" },
        el("span", { class: "pbar" }, el("span", { class: "pfill", style: `width:${seg.p_success * 100}%` })),
        ` ${pct(seg.p_success)}`),
      el("td", {}, el("span", { class: `badge ${lean.cls}` }, `${lean.icon} ${lean.label}`)),
      el("td", {}, sparkline(seg.attention)),
      el("td", {}, seg.clip_url ? clipButton(this.app.clips, seg.clip_url) : null),
    );
  }

  renderCalls() {
    const body = $("#calls-body");
    const segments = this.#segmentsOfSource().slice(-MAX_CALL_ROWS).reverse();
    body.replaceChildren(...segments.map((s) => this.#callRow(s)));
    if (!segments.length) {
      body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, t("calls.none"))));
    }
    $("#calls-count").textContent = segments.length ? t("calls.shown", { n: segments.length }) : "";
  }

  renderAttention(seg) {
    const box = $("#attn-latest");
    box.replaceChildren();
    if (!seg) {
      box.append(el("p", { class: "empty" }, t("attn.none")));
      return;
    }
    const lean = leaning(seg.p_success);
    box.append(
      sparkline(seg.attention, { width: 320, height: 90, cls: "spark big" }),
      el("div", { class: "attn-axis" }, ...[0, 1, 2].map((s) => el("span", {}, fmtSeconds(s, 0)))),
      el("p", {}, t("attn.line", { time: clockTime(seg.wall_time), p: pct(seg.p_success) }),
        el("span", { class: `badge ${lean.cls}` }, `${lean.icon} ${lean.label}`)),
    );
  }

  // ---------------------------------------------------------------- live events ------------

  onSegment(seg) {
    if (seg.source !== this.state.selectedSource) return;
    const encounter = this.state.openEncounters.get(seg.source) || null;
    if (this.chart) {
      const onChart = encounter ? seg.encounter_id === encounter.id : true;
      if ((encounter ? encounter.id : null) !== this.chartEncounter) this.rebuildChart();
      else if (onChart) this.chart.append(wallSeconds(seg), seg.p_success, seg.running_p_success ?? null);
    }
    const body = $("#calls-body");
    body.querySelector("td.empty")?.parentElement.remove();
    body.prepend(this.#callRow(seg));
    while (body.rows.length > MAX_CALL_ROWS) body.deleteRow(-1);
    $("#calls-count").textContent = t("calls.shown", { n: body.rows.length });
    this.renderAttention(seg);
    if (encounter && seg.encounter_id === encounter.id) this.renderEncounterNumbers(encounter);
  }

  renderEncounterNumbers(encounter) {
    const calls = document.getElementById("enc-calls");
    if (calls) calls.textContent = fmtNumber(encounter.n_segments ?? 0);
    this.renderGauge(encounter);
  }

  onLevel(msg) {
    if (msg.source !== this.state.selectedSource) return;
    for (const meter of document.querySelectorAll("#meters .meter")) {
      const ch = Number(meter.dataset.ch);
      const rms = msg.rms_db?.[ch];
      const peak = msg.peak_db?.[ch];
      meter.querySelector(".rms").style.width = `${meterPercent(rms)}%`;
      meter.querySelector(".peak").style.left = `${meterPercent(peak)}%`;
      meter.classList.toggle("clip", peak !== undefined && peak >= CLIP_DB);
      meter.querySelector(".db").textContent = Number.isFinite(rms) ? `${fmtNumber(rms, 0)} dB` : "–";
    }
  }

  onSpectrogram(msg) {
    if (msg.source !== this.state.selectedSource) return;
    this.spectrogram.push(msg.bins, msg.columns);
  }

  // ---------------------------------------------------------------- health -----------------

  renderHealth() {
    const dl = $("#health");
    const stats = this.state.stats;
    const model = this.state.model || {};
    const rows = [];
    const add = (label, value, cls = "") =>
      rows.push(el("div", { class: `hrow ${cls}` }, el("dt", {}, label), el("dd", {}, value)));
    const sources = stats?.sources || {};
    const knownIds = new Set([...this.state.sources.map((s) => s.id), ...Object.keys(sources)]);
    for (const id of knownIds) {
      const src = sources[id] || {};
      const status = src.status || this.state.sources.find((s) => s.id === id)?.status || "unknown";
      const icon = { ok: "✓", stalled: "⚠", starting: "◌" }[status] || "■";
      const age = Number.isFinite(src.last_audio_age_s) ? t("health.last_audio", { ago: fmtAgo(src.last_audio_age_s) }) : "";
      add(knownIds.size > 1 ? t("health.audio_of", { id }) : t("health.audio"),
        el("span", { class: `status ${status}`, "data-testid": "audio-status" }, `${icon} ${statusText(status)}${age}`),
        status === "ok" ? "" : "warn");
      const drops = (src.overflows ?? 0) + (src.dropped_blocks ?? 0);
      add(knownIds.size > 1 ? t("health.drops_of", { id }) : t("health.drops"),
        t("health.drops_value", { n: drops, overflow: src.overflows ?? 0, dropped: src.dropped_blocks ?? 0 }),
        drops ? "warn" : "");
    }
    const inf = stats?.inference;
    if (inf) {
      add(t("health.latency"), t("health.latency_value", { mean: fmtMs(inf.mean_ms), p95: fmtMs(inf.p95_ms) }));
      add(t("health.scored"),
        t("health.scored_value", { segments: inf.segments, batches: inf.batches })
          + (inf.overruns ? t("health.overruns", { n: inf.overruns }) : ""),
        inf.overruns ? "warn" : "");
    }
    // The stats carry the model that scores now (it may have been swapped since the snapshot).
    add(t("health.model"),
      el("span", { "data-testid": "active-model" }, stats?.model_version || model.version || "–"));
    const shadow = stats?.shadow;
    if (shadow) {
      add(t("health.shadow"), el("span", { "data-testid": "shadow-model" }, shadow.model_version));
      const agree = shadow.sources?.[this.state.selectedSource];
      add(t("health.shadow_agreement"),
        el("span", { "data-testid": "shadow-agreement" }, agree && agree.segments
          ? t("health.shadow_value", {
            n: agree.segments,
            same: fmtPercent(agree.same_verdicts),
            diff: fmtNumber(agree.mean_abs_diff, 3),
          }) + (agree.active_verdict && agree.shadow_verdict
            ? t("health.shadow_verdicts", {
              active: verdictText(agree.active_verdict), shadow: verdictText(agree.shadow_verdict),
            })
            : "")
          : t("health.shadow_waiting")),
        agree && agree.segments && agree.active_verdict !== agree.shadow_verdict ? "warn" : "");
    }
    const device = stats?.device || model.device || "–";
    add(t("health.runs_on"),
      /cuda|gpu/i.test(device) ? t("health.gpu", { device }) : /^cpu$/i.test(device) ? t("health.cpu") : device);
    if (stats?.ws) {
      add(t("health.live_link"), t("health.live_link_value", { n: stats.ws.clients, dropped: stats.ws.dropped }));
    }
    if (stats?.storage) {
      add(t("health.stored"), t("health.stored_value", { n: stats.storage.segments })
        + (stats.storage.outbox_pending ? t("health.outbox", { n: stats.storage.outbox_pending }) : ""));
    }
    if (stats && Number.isFinite(stats.uptime_s)) add(t("health.uptime"), duration(stats.uptime_s));
    dl.replaceChildren(...rows);
  }
}

function fmtMs(ms) {
  return Number.isFinite(ms) ? fmtUnit(ms, "millisecond", ms < 10 ? 1 : 0) : "–";
}

/** A source's audio state ("ok", "stalled", ...) in words. */
export function statusText(status) {
  return hasKey(`status.${status}`) ? t(`status.${status}`) : String(status);
}

/** What a source's kind ("synthetic", "sounddevice", "file") is called. */
export function sourceKindText(kind) {
  return hasKey(`source_kind.${kind}`) ? t(`source_kind.${kind}`) : String(kind ?? "");
}
