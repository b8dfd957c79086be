// The fleet page (`pandapulse fleet`): every enclosure of every box that publishes to the MQTT
// broker, from GET api/fleet (polled every second). A box whose Last Will said "offline" keeps
// its last known tiles, dimmed and marked offline; each box links to its own dashboard.

import { Unauthorized, adoptTokenFromUrl, getJson } from "./api.js";
import { errorText, fmtAgo, fmtTime, initI18n, t } from "./i18n.js";
import { $, el, leaning, pct } from "./util.js";

const POLL_MS = 1000;
const AUDIO = { ok: "✓", stalled: "⚠", starting: "◌", stopped: "■" };

function secondsSince(iso) {
  const then = Date.parse(iso || "");
  return Number.isNaN(then) ? null : Math.max(0, (Date.now() - then) / 1000);
}

function audioText(status) {
  return ["ok", "stalled", "starting", "stopped"].includes(status) ? t(`fleet.audio_${status}`) : String(status);
}

function tile(box, source) {
  const band = box.uncertain_band || [0.4, 0.6];
  const enc = source.encounter;
  const p = enc ? source.running_p_success : null;
  const hasP = p !== null && p !== undefined;
  const lean = leaning(hasP ? p : null, band);
  const ago = secondsSince(source.last_call_at);
  const outlook = el("div", { class: `tile-outlook ${enc && hasP ? lean.cls : "none"}`, "data-testid": "fleet-outlook" },
    el("span", { class: "tile-p" }, enc && hasP ? pct(p) : "—"),
    el("span", { class: "tile-label" }, enc ? (hasP ? `${lean.icon} ${lean.label}` : t("fleet.waiting")) : t("fleet.no_encounter")));
  const encounter = enc
    ? el("p", { class: "tile-encounter", "data-testid": "fleet-encounter", dataset: { id: String(enc.id) } },
        el("span", { class: "pill live" }, t("fleet.encounter_open", { time: fmtTime(enc.started_at, { seconds: false }) })),
        el("span", { class: "muted small" }, t("fleet.calls", { n: source.calls_scored })))
    : el("p", { class: "tile-encounter", "data-testid": "fleet-encounter", dataset: { id: "" } },
        el("span", { class: "pill idle" }, t("fleet.no_encounter")));
  const alerts = source.open_alerts
    ? el("p", { class: "tile-alerts failure", "data-testid": "fleet-alerts", dataset: { count: String(source.open_alerts) } },
        `⚠ ${t("fleet.open_alerts", { n: source.open_alerts })}`)
    : el("p", { class: "tile-alerts none", "data-testid": "fleet-alerts", dataset: { count: "0" } }, t("fleet.no_alerts"));
  return el("article", {
    class: `card tile${source.open_alerts ? " has-alert" : ""}${source.audio !== "ok" ? " audio-warn" : ""}`,
    "data-testid": "fleet-tile",
    dataset: { box: box.box, source: source.source, audio: source.audio, band: enc && hasP ? lean.cls : "none", p: enc && hasP ? String(p) : "" },
  },
    el("div", { class: "tile-head" },
      el("h2", {}, source.enclosure || source.source),
      el("span", { class: "muted small" }, source.source)),
    el("p", { class: "tile-audio", "data-testid": "fleet-audio" },
      el("span", { class: `status ${source.audio}` }, `${AUDIO[source.audio] || "■"} ${t("fleet.audio", { status: audioText(source.audio) })}`)),
    encounter,
    outlook,
    el("p", { class: "muted small", "data-testid": "fleet-last-call" },
      ago === null ? t("fleet.no_call") : t("fleet.last_call", { ago: fmtAgo(ago) })),
    source.alarm ? el("p", { class: "tile-alarm", "data-testid": "fleet-alarm" }, `✗ ${t("fleet.alarm")}`) : null,
    alerts);
}

function boxSection(box) {
  const status = box.status;
  const pill = el("span", { class: `pill ${status === "online" ? "online" : "offline"}`, "data-testid": "fleet-box-status" },
    t(`fleet.${status}`));
  const link = box.url
    ? el("a", { href: box.url, target: "_blank", rel: "noopener", "data-testid": "fleet-box-link" }, t("fleet.open_dashboard"))
    : null;
  return el("section", { class: `fleet-box ${status}`, "data-testid": "fleet-box", dataset: { box: box.box, status } },
    el("div", { class: "fleet-box-head" },
      el("h2", {}, box.name),
      pill,
      el("span", { class: "muted small" }, t("fleet.enclosures", { n: box.sources.length })),
      link),
    el("div", { class: "tiles" }, box.sources.map((source) => tile(box, source))));
}

function render(snapshot) {
  const broker = snapshot.broker;
  const line = $("#fleet-broker");
  line.dataset.state = broker.state;
  line.textContent = broker.state === "connected"
    ? t("fleet.broker_connected", { broker: broker.broker })
    : t("fleet.broker_connecting", { broker: broker.broker });
  const error = $("#fleet-error");
  error.hidden = !broker.error;
  error.textContent = broker.error ? t("fleet.broker_error", { error: broker.error }) : "";
  $("#fleet-empty").hidden = snapshot.boxes.length > 0;
  $("#fleet").replaceChildren(...snapshot.boxes.map(boxSection));
  document.body.dataset.boxes = String(snapshot.boxes.length);
}

async function poll() {
  try {
    render(await getJson("api/fleet"));
  } catch (err) {
    const error = $("#fleet-error");
    error.hidden = false;
    error.textContent = errorText(err);
    if (err instanceof Unauthorized) return; // a new token means a new page load
  }
  setTimeout(poll, POLL_MS);
}

adoptTokenFromUrl();
await initI18n({ loadJson: (path) => getJson(path) });
document.title = t("fleet.title");
poll();

