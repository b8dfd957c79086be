// The Upload view: drop a recording (or pick one) -> POST /predict -> verdict, chart, calls.

import { request } from "./api.js";
import { ProbabilityChart } from "./chart.js";
import { errorText, fmtNumber, fmtSeconds, t } from "./i18n.js";
import { $, el, formatBytes, leaning, pct, sparkline, verdictText } from "./util.js";

const ACCEPTED = /\.(wav|flac|ogg|mp3)$/i;

export class UploadView {
  constructor(app) {
    this.app = app;
    this.chart = null;
    this.busy = false;
    const zone = $("#dropzone");
    const input = $("#upload-input");
    input.addEventListener("change", () => {
      if (input.files.length) this.submit(input.files[0]);
      input.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      });
    }
    for (const type of ["dragleave", "dragend"]) {
      zone.addEventListener(type, () => zone.classList.remove("over"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const file = event.dataTransfer?.files?.[0];
      if (file) this.submit(file);
    });
    // A file dropped elsewhere on this view must not make the browser navigate away to it.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (this.app.view === "upload" && event.target !== zone && !zone.contains(event.target)) {
          event.preventDefault();
          if (type === "drop" && event.dataTransfer?.files?.[0]) this.submit(event.dataTransfer.files[0]);
        }
      });
    }
  }

  #status(text, cls = "") {
    const p = $("#upload-status");
    p.textContent = text;
    p.className = `upload-status ${cls}`;
  }

  async submit(file) {
    if (this.busy) return;
    if (!ACCEPTED.test(file.name) && !(file.type || "").startsWith("audio/")) {
      this.#status(t("upload.not_audio", { name: file.name }), "error");
      return;
    }
    this.busy = true;
    $("#dropzone").classList.add("busy");
    this.#status(t("upload.scoring", { name: file.name, size: formatBytes(file.size) }), "working");
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const response = await request("predict", { method: "POST", body: form });
      const result = await response.json();
      this.#status(t("upload.scored", { name: file.name }), "done");
      this.render(file.name, result);
    } catch (err) {
      this.#status(t("upload.failed", { name: file.name, detail: errorText(err) }), "error");
      this.app.reportError(err, null);
    } finally {
      this.busy = false;
      $("#dropzone").classList.remove("busy");
    }
  }

  render(name, r) {
    $("#upload-result").hidden = false;
    const lean = leaning(r.p_success, r.uncertain_band || undefined);
    const summary = $("#upload-summary");
    summary.dataset.verdict = r.verdict ?? "";
    const notes = [];
    if (r.mono) notes.push(t("upload.mono"));
    if (r.source_rate && r.source_rate !== 44100) notes.push(t("upload.resampled", { rate: r.source_rate }));
    summary.replaceChildren(
      el("div", { class: `verdict-big ${r.verdict === "uncertain" ? "uncertain" : r.verdict ? lean.cls : "none"}`, "data-testid": "upload-verdict" },
        r.verdict
          ? [el("span", { class: "vicon" }, lean.icon),
            el("span", {}, r.verdict === "uncertain" ? t("upload.uncertain") : verdictText(r.verdict).toUpperCase())]
          : el("span", {}, t("upload.no_vocalization"))),
      el("dl", { class: "facts" },
        el("div", {}, el("dt", {}, t("upload.file")), el("dd", {}, name)),
        el("div", {}, el("dt", {}, t("common.p_success")), el("dd", { class: "big" }, pct(r.p_success, 1))),
        el("div", {}, el("dt", {}, t("upload.calls")), el("dd", {}, fmtNumber(r.segments.length))),
        el("div", {}, el("dt", {}, t("upload.length")), el("dd", {}, fmtSeconds(Number(r.duration_s), 1))),
        el("div", {}, el("dt", {}, t("upload.model")), el("dd", {}, r.model_version || "–")),
        notes.length ? el("div", {}, el("dt", {}, t("upload.note")), el("dd", {}, notes.join(t("common.list_separator")))) : null),
    );
    const body = $("#upload-body");
    body.replaceChildren(...r.segments.map((s) => {
      const l = leaning(s.p_success, r.uncertain_band || undefined);
      return el("tr", {},
        el("td", { class: "num" }, fmtSeconds(s.start_s, 2)),
        el("td", { class: "num" }, fmtSeconds(s.end_s, 2)),
        el("td", { class: "num" }, pct(s.p_success, 1)),
        el("td", {}, el("span", { class: `badge ${l.cls}` }, `${l.icon} ${l.label}`)),
        el("td", {}, sparkline(s.attention)));
    }));
    if (!r.segments.length) {
      body.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, t("upload.no_calls"))));
    }
    if (!this.chart) {
      this.chart = new ProbabilityChart($("#upload-chart"), { time: false, height: 240, xLabel: t("upload.x_label") });
    }
    const segments = [...r.segments].sort((a, b) => a.start_s - b.start_s);
    this.chart.setData(
      segments.map((s) => s.start_s),
      segments.map((s) => s.p_success),
      segments.map((s) => s.running_p_success), // the encounter rule, as the service computed it
    );
  }
}
