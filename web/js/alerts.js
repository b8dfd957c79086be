// Alerts: the banner at the top of every view, the audible chime, and the alert log view.

import { DEFAULT_LANGUAGE, hasKey, language, t } from "./i18n.js";
import { el, dateTime, pct } from "./util.js";

const KIND_LOOK = {
  failure_dominates: { icon: "⚠", cls: "failure" },
  audio_stalled: { icon: "⚠", cls: "stalled" },
  test: { icon: "♪", cls: "test" },
};
// Alerts that matter keep chiming until someone acknowledges them; test alerts chime once.
const REPEAT_CHIME_MS = 30_000;
const MUTE_KEY = "pandapulse.muted";

export function kindText(kind) {
  const look = KIND_LOOK[kind] || { icon: "!", cls: "test" };
  return { ...look, title: hasKey(`alerts.kind.${kind}`) ? t(`alerts.kind.${kind}`) : String(kind) };
}

/**
 * An alert's message. The service writes it in English, with its numbers; in another language a
 * known kind gets the catalogue's sentence instead (built from the alert's fields), and the
 * service's text stays available as the element's title.
 */
export function alertMessage(alert, sourceLabel) {
  const key = `alerts.msg.${alert.kind}`;
  if (language() === DEFAULT_LANGUAGE || !hasKey(key)) return alert.message || "";
  const where = alert.source ? sourceLabel(alert.source) : "PandaPulse";
  return t(key, { where, p: pct(alert.p_failure) });
}

/**
 * A two-note chime synthesised with WebAudio (no sound file). Browsers only allow sound after
 * the user has interacted with the page, so the AudioContext is created on the first click or
 * key press.
 */
export class Chime {
  constructor() {
    this.ctx = null;
    this.muted = localStorage.getItem(MUTE_KEY) === "1";
    this.played = 0;
    const unlock = () => this.unlock();
    window.addEventListener("pointerdown", unlock, { capture: true });
    window.addEventListener("keydown", unlock, { capture: true });
  }

  get ready() {
    return this.ctx !== null && this.ctx.state === "running";
  }

  unlock() {
    if (!this.ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      this.ctx = new Ctx();
    }
    if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
  }

  setMuted(muted) {
    this.muted = muted;
    localStorage.setItem(MUTE_KEY, muted ? "1" : "0");
  }

  play() {
    this.played += 1;
    document.body.dataset.chimes = String(this.played);
    if (this.muted || !this.ctx) return;
    const { ctx } = this;
    const now = ctx.currentTime;
    const master = ctx.createGain();
    master.gain.value = 0.35;
    master.connect(ctx.destination);
    // Two bell-like notes (a falling fifth), each a sine with its octave, decaying quickly.
    [
      [987.77, 0],
      [659.25, 0.28],
      [987.77, 0.7],
      [659.25, 0.98],
    ].forEach(([freq, at]) => {
      for (const [mult, level] of [[1, 1], [2, 0.25]]) {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        osc.type = "sine";
        osc.frequency.value = freq * mult;
        gain.gain.setValueAtTime(0.0001, now + at);
        gain.gain.exponentialRampToValueAtTime(level, now + at + 0.015);
        gain.gain.exponentialRampToValueAtTime(0.0001, now + at + 0.9);
        osc.connect(gain).connect(master);
        osc.start(now + at);
        osc.stop(now + at + 1);
      }
    });
  }
}

/** The banner: the newest open alert, how many others are open, and an Acknowledge button. */
export class AlertBanner {
  constructor(root, { onAck, chime, sourceLabel }) {
    this.root = root;
    this.sourceLabel = sourceLabel;
    this.onAck = onAck;
    this.chime = chime;
    this.repeatTimer = null;
  }

  /** `open`: open alerts, newest first. `raised`: an alert that just arrived (chime for it). */
  render(open, raised = null) {
    clearInterval(this.repeatTimer);
    this.repeatTimer = null;
    this.root.replaceChildren();
    if (!open.length) {
      this.root.hidden = true;
      document.body.classList.remove("has-alert");
      return;
    }
    const alert = open[0];
    const kind = kindText(alert.kind);
    this.root.hidden = false;
    this.root.className = `alert-banner ${kind.cls}`;
    this.root.dataset.alertId = String(alert.id);
    document.body.classList.add("has-alert");
    const ack = el(
      "button",
      { class: "ack", type: "button", "data-testid": "ack", onclick: () => this.#ack(alert, ack) },
      t("alerts.ack"),
    );
    const extra = open.length > 1 ? t("alerts.more_open", { n: open.length - 1 }) : "";
    const where = [alert.source ? this.sourceLabel(alert.source) : "", alert.p_failure != null ? t("alerts.where_p", { p: pct(alert.p_failure) }) : ""]
      .filter(Boolean)
      .join(" · ");
    const hint = this.chime.ready || this.chime.muted
      ? null
      : el("span", { class: "alert-hint" }, t("alerts.tap_sound"));
    this.root.append(
      ...[
      el("span", { class: "alert-icon", "aria-hidden": "true" }, kind.icon),
      el(
        "div",
        { class: "alert-text" },
        el("strong", {}, kind.title + extra),
        el("span", { title: alert.message || "" }, alertMessage(alert, this.sourceLabel)),
        where ? el("span", { class: "alert-where" }, where) : null,
        hint,
      ),
      ack,
      ].filter(Boolean),
    );
    if (raised) this.chime.play();
    if (open.some((a) => a.kind !== "test")) {
      this.repeatTimer = setInterval(() => this.chime.play(), REPEAT_CHIME_MS);
    }
  }

  async #ack(alert, button) {
    button.disabled = true;
    button.textContent = t("alerts.acking");
    try {
      await this.onAck(alert);
    } catch (err) {
      button.disabled = false;
      button.textContent = t("alerts.ack");
      throw err;
    }
  }
}

/** The alert log table (Alerts view). */
export function renderAlertLog(tbody, alerts, { onAck, sourceLabel }) {
  tbody.replaceChildren();
  if (!alerts.length) {
    tbody.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, t("alerts.none"))));
    return;
  }
  for (const alert of alerts) {
    const kind = kindText(alert.kind);
    const acked = alert.acknowledged_at
      ? el(
          "span",
          { class: "acked" },
          alert.acknowledged_by
            ? t("alerts.acked_at_by", { time: dateTime(alert.acknowledged_at), by: alert.acknowledged_by })
            : t("alerts.acked_at", { time: dateTime(alert.acknowledged_at) }),
        )
      : el(
          "button",
          {
            type: "button",
            class: "small",
            onclick: (event) => {
              event.currentTarget.disabled = true;
              onAck(alert);
            },
          },
          t("alerts.ack"),
        );
    tbody.append(
      el(
        "tr",
        { class: alert.acknowledged_at ? "" : "open", dataset: { alertId: String(alert.id) } },
        el("td", { class: "nowrap" }, dateTime(alert.created_at)),
        el("td", {}, el("span", { class: `kind ${kind.cls}` }, `${kind.icon} ${kind.title}`)),
        el("td", {}, alert.source ? sourceLabel(alert.source) : "–"),
        el("td", { title: alert.message || "" }, alertMessage(alert, sourceLabel)),
        el("td", { class: "num" }, alert.p_failure != null ? pct(alert.p_failure) : "–"),
        deliveryCell(mergeDeliveries(alert.id, alert.deliveries || [])),
        el("td", {}, acked),
      ),
    );
  }
}

// --- per-channel delivery (webhooks, Apprise notifications, MQTT) ---------------------------

// Each alert's deliveries as last shown. A `delivery` event and a reload of the log may arrive
// in either order; a delivery only ever moves forward (more attempts, then delivered or given
// up), so the more advanced of the two states is the one to show.
const shownDeliveries = new Map(); // alert id -> deliveries, in the service's order

function progress(d) {
  return 2 * (d.attempts || 0) + (d.status === "pending" ? 0 : 1);
}

function mergeDeliveries(alertId, incoming) {
  const known = shownDeliveries.get(alertId);
  const merged =
    known && known.length === incoming.length
      ? incoming.map((d, i) => (progress(known[i]) > progress(d) ? known[i] : d))
      : incoming;
  shownDeliveries.set(alertId, merged);
  return merged;
}

const DELIVERY_ICON = { delivered: "✓", pending: "…", failed: "✗" };

function deliveryStatus(d) {
  if (d.status === "delivered") return t("alerts.delivery.delivered", { time: dateTime(d.delivered_at) });
  if (d.status === "failed") return t("alerts.delivery.failed", { error: d.last_error || "" });
  if (!d.attempts) return t("alerts.delivery.sending");
  return t("alerts.delivery.retrying", { n: d.attempts, error: d.last_error || "" });
}

/** The Delivery cell: one line per channel, named by its label (no secrets in it). */
function deliveryCell(deliveries) {
  if (!deliveries.length) {
    return el("td", { class: "deliveries" }, el("span", { class: "muted" }, t("alerts.delivery.none")));
  }
  return el(
    "td",
    { class: "deliveries" },
    ...deliveries.map((d) =>
      el(
        "div",
        {
          class: `delivery ${d.status}`,
          title: d.channel,
          dataset: { channel: d.channel, status: d.status },
        },
        el("span", { class: "delivery-icon", "aria-hidden": "true" }, DELIVERY_ICON[d.status] || "?"),
        el("span", { class: "delivery-label" }, d.label),
        el("span", { class: "delivery-status" }, deliveryStatus(d)),
      ),
    ),
  );
}

/** A `delivery` event: show the alert's new per-channel results in its row of the log. */
export function updateDeliveries(tbody, alertId, deliveries) {
  const merged = mergeDeliveries(alertId, deliveries);
  const row = tbody.querySelector(`tr[data-alert-id="${alertId}"]`);
  const cell = row && row.querySelector("td.deliveries");
  if (cell) cell.replaceWith(deliveryCell(merged));
}
