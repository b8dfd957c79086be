// The History view: the encounters (paged), one encounter's timeline with its calls and alerts,
// playing a call's clip, recording the outcome, CSV exports.

import { download, getJson, getToken, sendJson, serviceUrl } from "./api.js";
import { alertMessage, kindText } from "./alerts.js";
import { ProbabilityChart } from "./chart.js";
import { clipButton } from "./clips.js";
import { fmtNumber, fmtSeconds, t } from "./i18n.js";
import {
  $, clockTime, dateTime, duration, el, leaning, pct, runningFigures, secondsBetween, sparkline,
  verdictBadge,
} from "./util.js";

const PAGE_SIZE = 20;
const SAVED_NOTE_MS = 8000; // "Saved" survives the detail being redrawn by the live update

export class HistoryView {
  constructor(app) {
    this.app = app;
    this.offset = 0;
    this.total = 0;
    this.selected = null;
    this.chart = null;
    this.refreshTimer = null;
    $("#hist-refresh").addEventListener("click", () => {
      this.refresh();
      if (this.selected) this.open(this.selected, { scroll: false });
    });
    $("#hist-prev").addEventListener("click", () => {
      this.offset = Math.max(0, this.offset - PAGE_SIZE);
      this.refresh();
    });
    $("#hist-next").addEventListener("click", () => {
      this.offset += PAGE_SIZE;
      this.refresh();
    });
    $("#hist-export-all").addEventListener("click", () =>
      this.#download("api/encounters/export.csv", "pandapulse-encounters.csv"));
    $("#hist-export-all").after(...this.#datasetControls());
  }

  async show(id) {
    await this.refresh();
    if (id) await this.open(Number(id));
    else this.#closeDetail();
  }

  /** Something changed live (an encounter started, stopped, got an outcome): reload soon. */
  changed(encounterId) {
    if (this.app.view !== "history") return;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      this.refresh();
      // Re-draw the open encounter's detail, unless the keeper is editing its outcome.
      const editing = document.querySelector("[data-testid=outcome-form][data-dirty]");
      if (this.selected && this.selected === encounterId && !editing) {
        this.open(encounterId, { scroll: false });
      }
    }, 300);
  }

  async refresh() {
    let page;
    try {
      page = await getJson(`api/encounters?limit=${PAGE_SIZE}&offset=${this.offset}`);
    } catch (err) {
      this.app.reportError(err, t("history.load_failed"));
      return;
    }
    this.total = page.total;
    const body = $("#hist-body");
    body.replaceChildren(...page.items.map((e) => this.#row(e)));
    if (!page.items.length) {
      body.append(el("tr", {}, el("td", { colspan: 9, class: "empty" }, t("history.none"))));
    }
    $("#hist-total").textContent = t("history.total", { n: page.total });
    const last = Math.min(this.offset + page.items.length, page.total);
    $("#hist-page").textContent = page.total
      ? t("history.page", { from: this.offset + 1, to: last, total: page.total })
      : "";
    $("#hist-prev").disabled = this.offset === 0;
    $("#hist-next").disabled = this.offset + PAGE_SIZE >= page.total;
  }

  #row(e) {
    const open = !e.ended_at;
    return el("tr", {
      class: `clickable${this.selected === e.id ? " selected" : ""}`,
      tabindex: 0,
      dataset: { encounterId: String(e.id) },
      onclick: () => { location.hash = `#history/${e.id}`; },
      onkeydown: (ev) => { if (ev.key === "Enter") location.hash = `#history/${e.id}`; },
    },
      el("td", {}, dateTime(e.started_at), open ? el("span", { class: "pill live small" }, t("history.open_pill")) : null),
      el("td", {}, e.enclosure || e.source),
      el("td", {}, e.pair || "–"),
      el("td", {}, e.keeper || "–"),
      el("td", { class: "num" }, duration(secondsBetween(e.started_at, e.ended_at))),
      el("td", { class: "num" }, fmtNumber(e.n_segments ?? 0)),
      el("td", { class: "num" }, pct(e.p_success)),
      el("td", {}, verdictBadge(e.verdict)),
      el("td", {}, e.outcome && e.outcome !== "unknown"
        ? verdictBadge(e.outcome)
        : el("span", { class: "muted" }, e.outcome ? t("outcome.unknown_short") : "–")),
    );
  }

  #closeDetail() {
    this.selected = null;
    $("#hist-detail").hidden = true;
    for (const tr of document.querySelectorAll("#hist-body tr.selected")) tr.classList.remove("selected");
  }

  async open(id, { scroll = true } = {}) {
    let enc;
    try {
      enc = await getJson(`api/encounters/${id}`);
    } catch (err) {
      this.app.reportError(err, t("history.encounter_failed", { id: String(id) }));
      return;
    }
    this.selected = enc.id;
    for (const tr of document.querySelectorAll("#hist-body tr")) {
      tr.classList.toggle("selected", tr.dataset.encounterId === String(enc.id));
    }
    const box = $("#hist-detail");
    box.hidden = false;
    if (this.chart) {
      this.chart.destroy();
      this.chart = null;
    }
    const segments = [...(enc.segments || [])].sort((a, b) => a.start_s - b.start_s);
    const chartBox = el("div", { class: "chart", "data-testid": "history-chart" });
    box.replaceChildren(...[
      el("div", { class: "card" },
        el("div", { class: "card-head" },
          el("h2", {}, `${enc.enclosure || enc.source} · ${enc.pair || t("history.unnamed_pair")}`),
          el("div", { class: "actions" },
            el("button", { type: "button", onclick: () => this.#download(`api/encounters/${enc.id}/export.csv`, `pandapulse-encounter-${enc.id}.csv`) }, t("history.calls_csv")),
            el("button", { type: "button", "data-testid": "raven-download", title: t("history.raven_hint"), onclick: () => this.#download(`api/encounters/${enc.id}/calls.raven.txt`, `pandapulse-encounter-${enc.id}.Table.1.selections.txt`) }, t("history.raven")),
            el("button", { type: "button", "data-testid": "audacity-download", title: t("history.audacity_hint"), onclick: () => this.#download(`api/encounters/${enc.id}/calls.audacity.txt`, `pandapulse-encounter-${enc.id}-labels.txt`) }, t("history.audacity")),
            el("button", { type: "button", "data-testid": "encounter-zip", title: t("history.encounter_zip_hint"), onclick: () => saveLarge(`api/encounters/${enc.id}/dataset.zip`) }, t("history.encounter_zip")),
            el("button", { type: "button", class: "ghost", onclick: () => { location.hash = "#history"; } }, t("common.close")))),
        el("dl", { class: "facts" },
          fact(t("history.keeper"), enc.keeper || "–"),
          fact(t("history.started"), dateTime(enc.started_at)),
          fact(t("history.ended"), enc.ended_at ? dateTime(enc.ended_at) : t("history.still_open")),
          fact(t("history.length"), duration(secondsBetween(enc.started_at, enc.ended_at))),
          fact(t("history.calls"), fmtNumber(enc.n_segments ?? segments.length)),
          fact(t("common.p_success"), pct(enc.p_success)),
          fact(t("history.verdict"), verdictBadge(enc.verdict)),
          fact(t("history.model"), enc.model_version || "–"),
          fact(t("history.audio"), audioText(enc.audio || [])),
          enc.auto ? fact(t("history.opened"), t("history.opened_auto")) : null,
          enc.notes ? fact(t("history.notes"), enc.notes) : null),
        el("h3", {}, t("history.timeline")),
        chartBox),
      el("div", { class: "card" },
        el("h2", {}, t("history.calls_title", { n: segments.length })),
        el("div", { class: "table-scroll" },
          el("table", { class: "calls" },
            el("thead", {}, el("tr", {}, ...["calls.time", "calls.length", "common.p_success", "calls.leaning", "calls.attention", "calls.clip"].map((h) => el("th", {}, t(h))))),
            el("tbody", {}, segments.length
              ? segments.map((s) => segmentRow(s, this.app.clips))
              : el("tr", {}, el("td", { colspan: 6, class: "empty" }, t("history.no_calls"))))))),
      this.#outcomeForm(enc),
      (enc.alerts || []).length
        ? el("div", { class: "card" },
            el("h2", {}, t("history.alerts_title")),
            el("ul", { class: "plain" }, enc.alerts.map((a) => el("li", {},
              t("history.alert_line", {
                icon: kindText(a.kind).icon,
                time: dateTime(a.created_at),
                kind: kindText(a.kind).title,
                message: alertMessage(a, (id) => this.app.sourceLabel(id)),
              }),
              a.acknowledged_at
                ? a.acknowledged_by ? t("history.alert_acked_by", { by: a.acknowledged_by }) : t("history.alert_acked")
                : t("history.alert_open")))))
        : null,
    ].filter(Boolean));
    this.chart = new ProbabilityChart(chartBox, { time: true, height: 220 });
    const share = this.app.state.model?.class0_share ?? null; // the live model's
    const running = runningFigures(segments, { n: enc.n_segments, p: enc.p_success }, share);
    this.chart.setData(
      segments.map((s) => Date.parse(s.wall_time) / 1000),
      segments.map((s) => s.p_success),
      running,
    );
    if (scroll) box.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  #outcomeForm(enc) {
    const form = el("form", { class: "card outcome-form", "data-testid": "outcome-form" },
      el("h2", {}, t("outcome.title")),
      el("p", { class: "muted small" }, t("outcome.hint")),
      el("fieldset", { class: "radio-row" },
        el("legend", { class: "sr-only" }, t("outcome.title")),
        ...["success", "failure", "unknown"].map((v) =>
          el("label", { class: `radio ${v}` },
            el("input", { type: "radio", name: "outcome", value: v, checked: (enc.outcome || "unknown") === v }),
            t(`outcome.${v}`)))),
      el("label", { class: "check" }, el("input", { type: "checkbox", name: "copulation_observed", checked: Boolean(enc.copulation_observed) }), t("outcome.copulation")),
      el("label", { class: "check" }, el("input", { type: "checkbox", name: "pregnancy_confirmed", checked: Boolean(enc.pregnancy_confirmed) }), t("outcome.pregnancy")),
      el("label", { class: "block" }, t("outcome.notes"), el("textarea", { name: "notes", rows: 2, maxlength: 2000 }, enc.notes || "")),
      el("div", { class: "actions" },
        el("button", { type: "submit", class: "primary" }, t("outcome.save")),
        el("span", { class: "saved muted", role: "status" },
          this.savedAt?.id === enc.id && Date.now() - this.savedAt.at < SAVED_NOTE_MS ? t("outcome.saved") : "")),
    );
    form.addEventListener("input", () => { form.dataset.dirty = "1"; });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = {
        outcome: data.get("outcome") || "unknown",
        copulation_observed: form.copulation_observed.checked,
        pregnancy_confirmed: form.pregnancy_confirmed.checked,
        notes: String(data.get("notes") || ""),
      };
      const status = form.querySelector(".saved");
      status.textContent = t("outcome.saving");
      try {
        await sendJson("PUT", `api/encounters/${enc.id}/outcome`, body);
        status.textContent = t("outcome.saved");
        delete form.dataset.dirty;
        this.savedAt = { id: enc.id, at: Date.now() };
        this.refresh();
      } catch (err) {
        status.textContent = "";
        this.app.reportError(err, t("outcome.save_failed"));
      }
    });
    return form;
  }

  /** The training-dataset export of the list: a start date, with or without unlabelled
   * encounters, one zip (the folder `pandapulse export-dataset` writes). */
  #datasetControls() {
    const since = el("input", { type: "date", id: "hist-since", "aria-label": t("history.dataset_since") });
    const all = el("input", { type: "checkbox", id: "hist-unlabelled" });
    const button = el("button", {
      type: "button",
      id: "hist-dataset",
      title: t("history.dataset_hint"),
      onclick: () => {
        const query = new URLSearchParams();
        if (since.value) query.set("since", since.value);
        if (all.checked) query.set("all", "true");
        saveLarge(`api/encounters/dataset.zip?${query}`);
      },
    }, t("history.dataset_zip"));
    return [
      el("label", { class: "small" }, t("history.dataset_since"), " ", since),
      el("label", { class: "check small" }, all, t("history.dataset_all")),
      button,
    ];
  }

  async #download(path, name) {
    try {
      await download(path, name);
    } catch (err) {
      this.app.reportError(err, t("history.export_failed"));
    }
  }
}

/**
 * Save a large download (a dataset zip: gigabytes of audio) straight to disk: the browser
 * follows a link, with the token in the query (a link cannot send the header), instead of
 * holding the whole file in memory as a blob.
 */
function saveLarge(path) {
  const url = new URL(serviceUrl(path));
  const token = getToken();
  if (token) url.searchParams.set("token", token);
  const link = el("a", { href: url.toString(), download: "" });
  document.body.append(link);
  link.click();
  link.remove();
}

/** What is kept of the encounter's whole audio: each file's length, or why there is none. */
function audioText(parts) {
  if (!parts.length) return t("history.audio_none");
  return parts.map((p) => (p.state === "kept" ? duration(p.seconds) : t(`history.audio_${p.state}`))).join(" + ");
}

function fact(label, value) {
  return el("div", {}, el("dt", {}, label), el("dd", {}, value));
}

function segmentRow(seg, clips) {
  const lean = leaning(seg.p_success);
  return el("tr", { dataset: { segmentId: String(seg.id) } },
    el("td", {}, clockTime(seg.wall_time)),
    el("td", { class: "num" }, fmtSeconds(seg.end_s - seg.start_s, 1)),
    el("td", { class: "num" }, pct(seg.p_success)),
    el("td", {}, el("span", { class: `badge ${lean.cls}` }, `${lean.icon} ${lean.label}`)),
    el("td", {}, sparkline(seg.attention)),
    el("td", {}, seg.clip_url ? clipButton(clips, seg.clip_url) : "–"),
  );
}
