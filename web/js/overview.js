// The overview of a box with several enclosures (sources): one tile per enclosure with its audio
// state, its open encounter, the encounter's running P(success) in its verdict band, and its open
// alerts. A tile opens that enclosure's full Live view (#live/<source id>).
//
// The overview watches no source (no level or spectrogram stream); segments, encounters, alerts
// and stats come to every client anyway, and are all it needs.

import { kindText } from "./alerts.js";
import { fmtAgo, fmtNumber, t } from "./i18n.js";
import { sourceKindText, statusText } from "./live.js";
import { $, clockTime, duration, el, leaning, pct, secondsBetween } from "./util.js";

const STATUS_ICON = { ok: "✓", stalled: "⚠", starting: "◌" };

export class OverviewView {
  /** `app` gives: state (sources, openEncounters, alerts, stats), openSource(id). */
  constructor(app) {
    this.app = app;
    this.visible = false;
    this.frame = 0;
    // The elapsed time of open encounters moves every second.
    setInterval(() => { if (this.visible) this.render(); }, 1000);
  }

  show(visible) {
    this.visible = visible;
    if (visible) this.render();
  }

  /** Something changed: redraw on the next frame (several events in a burst draw once). */
  changed() {
    if (!this.visible || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const { sources } = this.app.state;
    const box = $("#overview-tiles");
    const focused = document.activeElement?.closest?.("[data-testid=overview-tile]")?.dataset.source;
    box.replaceChildren(...sources.map((source) => this.#tile(source)));
    if (focused) box.querySelector(`[data-source="${CSS.escape(focused)}"]`)?.focus();
  }

  #tile(source) {
    const { state } = this.app;
    const stats = state.stats?.sources?.[source.id] || {};
    const status = stats.status || source.status || "unknown";
    const encounter = state.openEncounters.get(source.id) || null;
    const alerts = [...state.alerts.values()]
      .filter((a) => a.source === source.id && !a.acknowledged_at)
      .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || b.id - a.id);
    const p = encounter ? encounter.p_success : null;
    const hasP = p !== null && p !== undefined;
    const lean = leaning(hasP ? p : null);
    const name = source.enclosure || source.id;

    const audioAge = Number.isFinite(stats.last_audio_age_s)
      ? t("health.last_audio", { ago: fmtAgo(stats.last_audio_age_s) })
      : "";
    const audio = el("p", { class: "tile-audio", "data-testid": "tile-audio", dataset: { status } },
      el("span", { class: `status ${status}` }, `${STATUS_ICON[status] || "■"} ${t("overview.audio")} ${statusText(status)}`),
      el("span", { class: "muted small" }, audioAge));

    const encounterPart = encounter
      ? el("div", { class: "tile-encounter" },
          el("span", { class: "pill live", "data-testid": "tile-encounter" }, t("live.open")),
          el("dl", { class: "tile-facts" },
            el("div", {}, el("dt", {}, t("live.pair")), el("dd", {}, encounter.pair || "–")),
            el("div", {}, el("dt", {}, t("live.started")), el("dd", {}, clockTime(encounter.started_at))),
            el("div", {}, el("dt", {}, t("live.elapsed")),
              el("dd", {}, duration(secondsBetween(encounter.started_at, encounter.ended_at)))),
            el("div", {}, el("dt", {}, t("live.calls")), el("dd", {}, fmtNumber(encounter.n_segments ?? 0)))))
      : el("div", { class: "tile-encounter" },
          el("span", { class: "pill idle", "data-testid": "tile-encounter" }, t("live.no_open")));

    const label = !encounter
      ? t("gauge.no_open")
      : !hasP
        ? t("gauge.waiting_calls")
        : lean.cls === "uncertain" ? t("gauge.uncertain") : t(`gauge.leaning_${lean.cls}`);
    const outlook = el("div", { class: `tile-outlook ${encounter && hasP ? lean.cls : "none"}`, "data-testid": "tile-outlook" },
      el("span", { class: "tile-p" }, encounter && hasP ? pct(p) : "—"),
      el("span", { class: "tile-label" }, label),
      el("div", { class: "split-bar", "aria-hidden": "true" },
        el("div", { class: "split success", style: `width: ${(hasP ? p : 0.5) * 100}%` }),
        el("div", { class: "split failure", style: `width: ${(1 - (hasP ? p : 0.5)) * 100}%` })));

    const alertPart = alerts.length
      ? el("p", { class: `tile-alerts ${kindText(alerts[0].kind).cls}`, "data-testid": "tile-alerts", dataset: { count: String(alerts.length) } },
          `${kindText(alerts[0].kind).icon} ${t("overview.open_alerts", { n: alerts.length })} · ${kindText(alerts[0].kind).title}`)
      : el("p", { class: "tile-alerts none", "data-testid": "tile-alerts", dataset: { count: "0" } }, t("overview.no_alerts"));

    return el("a", {
      class: `card tile${alerts.length ? " has-alert" : ""}${status !== "ok" ? " audio-warn" : ""}`,
      href: `#live/${encodeURIComponent(source.id)}`,
      "data-testid": "overview-tile",
      dataset: { source: source.id, p: encounter && hasP ? String(p) : "", band: encounter && hasP ? lean.cls : "none" },
      title: t("overview.open_enclosure", { name }),
    },
      el("div", { class: "tile-head" },
        el("h2", {}, name),
        el("span", { class: "muted small" }, `${source.id} · ${sourceKindText(source.kind)}`)),
      audio,
      encounterPart,
      outlook,
      alertPart,
      el("span", { class: "tile-open" }, t("overview.open")));
  }
}
