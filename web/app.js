// PandaPulse keeper dashboard: boot, login, the live connection, routing between views.
// Plain ES modules, no build step; the only library is uPlot (web/vendor/uplot, global).

import { AlertBanner, Chime, renderAlertLog, updateDeliveries } from "./js/alerts.js";
import {
  Unauthorized, adoptTokenFromUrl, getJson, getToken, liveSocketUrl, sendJson, setToken,
} from "./js/api.js";
import { ClipPlayer } from "./js/clips.js";
import { HistoryView } from "./js/history.js";
import {
  errorText, initI18n, language, languageChoices, rememberLanguage, t,
} from "./js/i18n.js";
import { LiveView } from "./js/live.js";
import { OverviewView } from "./js/overview.js";
import { LiveSocket } from "./js/socket.js";
import { UploadView } from "./js/upload.js";
import { $, setUncertainBand } from "./js/util.js";

const MAX_SEGMENTS = 600;
const VIEWS = ["live", "history", "upload", "alerts"];
const SOURCE_KEY = "pandapulse.source";
const TOAST_MS = 6000;
const SPEAKER_ON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 9v6h4l5 5V4L7 9H3zm13.5 3A4.5 4.5 0 0 0 14 8v8a4.5 4.5 0 0 0 2.5-4zM14 3.2v2.1a7 7 0 0 1 0 13.4v2.1a9 9 0 0 0 0-17.6z"/></svg>';
const SPEAKER_OFF = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 9v6h4l5 5V4L7 9H3zm13.6 3 2.7-2.7-1.4-1.4-2.7 2.7-2.7-2.7-1.4 1.4 2.7 2.7-2.7 2.7 1.4 1.4 2.7-2.7 2.7 2.7 1.4-1.4z"/></svg>';

class App {
  constructor() {
    this.state = {
      model: null,
      sources: [],
      openEncounters: new Map(), // source id -> open encounter
      segments: [], // recent segments of every source, oldest first
      alerts: new Map(), // id -> alert (open ones, plus any seen acknowledged)
      stats: null,
      selectedSource: localStorage.getItem(SOURCE_KEY),
    };
    this.view = null;
    this.connection = "connecting";
    this.started = false;
    this.chime = new Chime();
    this.clips = new ClipPlayer($("#clip-player"), (err, what) => this.reportError(err, what));
    this.banner = new AlertBanner($("#alert-banner"), {
      chime: this.chime,
      onAck: (alert) => this.acknowledge(alert),
      sourceLabel: (id) => this.sourceLabel(id),
    });
    this.live = new LiveView(this);
    this.overview = new OverviewView(this);
    this.liveMode = null; // "overview" or "source" while the Live view shows
    this.history = new HistoryView(this);
    this.upload = new UploadView(this);
    this.socket = new LiveSocket(liveSocketUrl, {
      message: (msg) => this.onMessage(msg),
      state: (s) => this.onConnection(s),
      unauthorized: () => this.showLogin(t("login.rejected")),
      silentClose: () => this.socketRefused(),
    });
    this.#wire();
  }

  #wire() {
    window.addEventListener("hashchange", () => this.route());
    $("#source-select").addEventListener("change", (event) => {
      if (this.view === "live") location.hash = `#live/${encodeURIComponent(event.target.value)}`;
      else this.selectSource(event.target.value);
    });
    const langSelect = $("#lang-select");
    langSelect.replaceChildren(...languageChoices().map(([code, name]) => {
      const option = document.createElement("option");
      option.value = code;
      option.textContent = name;
      option.selected = code === language();
      return option;
    }));
    langSelect.addEventListener("change", () => {
      // Every view re-renders in the new language from a fresh snapshot.
      rememberLanguage(langSelect.value);
      location.reload();
    });
    const sound = $("#sound-toggle");
    const showSound = () => {
      // Static markup only (an icon and fixed words), never data from the service.
      sound.innerHTML = this.chime.muted ? SPEAKER_OFF : SPEAKER_ON;
      const text = document.createElement("span");
      text.className = "sound-text";
      text.textContent = ` ${t(this.chime.muted ? "sound.off" : "sound.on")}`;
      sound.append(text);
      sound.setAttribute("aria-pressed", String(this.chime.muted));
      sound.setAttribute("aria-label", t(this.chime.muted ? "sound.off_label" : "sound.on_label"));
    };
    showSound();
    sound.addEventListener("click", () => {
      this.chime.setMuted(!this.chime.muted);
      showSound();
      this.renderAlerts();
    });
    $("#login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.login($("#login-token").value.trim());
    });
    $("#alerts-refresh").addEventListener("click", () => this.loadAlertLog());
    $("#alerts-open-only").addEventListener("change", () => this.loadAlertLog());
    $("#alerts-test").addEventListener("click", async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        await sendJson("POST", "api/alerts/test", this.state.selectedSource ? { source: this.state.selectedSource } : {});
        this.toast(t("alerts.test_sent"));
      } catch (err) {
        this.reportError(err, t("alerts.test_failed"));
      } finally {
        button.disabled = false;
      }
    });
    // The alert banner sticks right under the top bar, however tall the top bar is.
    const topbar = $(".topbar");
    new ResizeObserver(() => {
      document.documentElement.style.setProperty("--topbar-h", `${Math.ceil(topbar.offsetHeight)}px`);
    }).observe(topbar);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.socket.retryNow();
    });
  }

  // ---------------------------------------------------------------- login ------------------

  async boot(fromUrl) {
    if ((await this.authState()) === "unauthorized") {
      this.showLogin(fromUrl || getToken() ? t("login.rejected") : "");
      return;
    }
    this.start();
  }

  /** Ask the REST side whether we are let in: "ok", "unauthorized" or "unreachable". */
  async authState() {
    try {
      await getJson("api/sources");
      return "ok";
    } catch (err) {
      return err instanceof Unauthorized ? "unauthorized" : "unreachable";
    }
  }

  /**
   * The socket closed before its snapshot, which does not say why. A 401 on the REST side means
   * the token is wrong (show the login form and stop retrying); anything else: keep retrying.
   */
  async socketRefused() {
    if ((await this.authState()) !== "unauthorized") return false;
    this.showLogin(t("login.rejected"));
    return true;
  }

  async login(token) {
    const error = $("#login-error");
    error.hidden = true;
    if (!token) return;
    setToken(token);
    const auth = await this.authState();
    if (auth === "unauthorized") {
      setToken("");
      error.textContent = t("login.wrong_token");
      error.hidden = false;
      return;
    }
    if (auth === "unreachable") {
      error.textContent = t("login.unreachable");
      error.hidden = false;
    }
    $("#login").hidden = true;
    $("#login-token").value = "";
    this.start();
  }

  showLogin(message) {
    this.socket.stop();
    this.started = false;
    document.body.classList.add("logged-out");
    $("#login").hidden = false;
    const error = $("#login-error");
    error.textContent = message || "";
    error.hidden = !message;
    setTimeout(() => $("#login-token").focus(), 0);
  }

  start() {
    if (this.started) return;
    this.started = true;
    document.body.classList.remove("logged-out");
    $("#login").hidden = true;
    this.route();
    this.socket.start();
  }

  // ---------------------------------------------------------------- routing ----------------

  route() {
    const [name, arg] = (location.hash.replace(/^#/, "") || "live").split("/");
    const view = VIEWS.includes(name) ? name : "live";
    const changed = view !== this.view;
    this.view = view;
    for (const section of document.querySelectorAll("main > .view")) {
      section.hidden = section.dataset.view !== view;
    }
    for (const link of document.querySelectorAll(".tabs a")) {
      link.classList.toggle("active", link.dataset.view === view);
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.body.dataset.view = view;
    this.liveArg = view === "live" && arg ? decodeURIComponent(arg) : null;
    this.#applyLiveMode();
    if (!this.started) return;
    if (view === "history") this.history.show(arg);
    if (view === "alerts" && changed) this.loadAlertLog();
  }

  /**
   * The Live view of a box with several sources opens on the overview (#live); #live/<id> is
   * one enclosure's full view. With one source #live is that source's full view.
   */
  #applyLiveMode() {
    const { sources } = this.state;
    const several = sources.length > 1;
    const wanted = this.liveArg && sources.some((s) => s.id === this.liveArg) ? this.liveArg : null;
    const mode = this.view !== "live" ? null : several && !wanted ? "overview" : "source";
    if (wanted && wanted !== this.state.selectedSource) this.selectSource(wanted);
    $("#view-overview").hidden = mode !== "overview";
    $("#view-live").hidden = mode !== "source";
    $("#live-back").hidden = !several;
    document.body.dataset.liveMode = mode || "";
    // The source picker switches between full views; the overview's tiles do that there.
    $("#source-pick").hidden = !several || mode === "overview";
    const previous = this.liveMode;
    this.liveMode = mode;
    this.overview.show(mode === "overview");
    if (mode === "source" && this.started) this.live.ensureChart();
    if (mode !== previous) this.#watchSelected();
  }

  // ---------------------------------------------------------------- live events ------------

  onConnection({ state, retryAt }) {
    this.connection = state;
    const node = $("#conn");
    node.dataset.state = state;
    node.className = `conn ${state}`;
    clearInterval(this.connTicker);
    if (state === "open") node.textContent = t("conn.open");
    else if (state === "waiting") {
      const tick = () => {
        const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
        node.textContent = t("conn.waiting", { s });
      };
      tick();
      this.connTicker = setInterval(tick, 500);
    } else if (state === "reconnecting") node.textContent = t("conn.reconnecting");
    else if (state === "connecting") node.textContent = t("conn.connecting");
    else node.textContent = t("conn.closed");
    document.body.classList.toggle("offline", state !== "open");
    $("#gauge-card").classList.toggle("stale", state !== "open");
  }

  onMessage(msg) {
    switch (msg.type) {
      case "snapshot":
        return this.onSnapshot(msg);
      case "level":
        return this.live.onLevel(msg);
      case "spectrogram":
        return this.live.onSpectrogram(msg);
      case "segment":
        return this.onSegment(msg);
      case "encounter":
        return this.onEncounter(msg);
      case "alert":
        return this.onAlert(msg);
      case "delivery":
        return updateDeliveries($("#alerts-body"), msg.alert_id, msg.deliveries);
      case "stats":
        this.state.stats = msg;
        this.#mergeSourceStatus(msg);
        this.overview.changed();
        return this.live.renderHealth();
      default:
        return undefined;
    }
  }

  onSnapshot(msg) {
    const s = this.state;
    s.model = msg.model || null;
    setUncertainBand(s.model?.uncertain_band);
    s.sources = msg.sources || [];
    s.openEncounters = new Map((msg.encounters || []).filter((e) => !e.ended_at).map((e) => [e.source, e]));
    s.segments = [...(msg.segments || [])].sort((a, b) => a.start_s - b.start_s || a.id - b.id);
    s.alerts = new Map((msg.alerts || []).map((a) => [a.id, a]));
    s.stats = msg.stats || null;
    this.#renderSources();
    this.#applyLiveMode();
    this.#watchSelected(); // a fresh connection watches nothing until told
    this.live.renderAll();
    this.renderAlerts();
    if (this.view === "history") this.history.changed(this.history.selected);
    if (this.view === "alerts") this.loadAlertLog();
  }

  #mergeSourceStatus(stats) {
    for (const source of this.state.sources) {
      const st = stats.sources?.[source.id];
      if (st?.status) source.status = st.status;
    }
  }

  #renderSources() {
    const { sources } = this.state;
    if (!sources.some((s) => s.id === this.state.selectedSource)) {
      this.state.selectedSource = sources[0]?.id ?? null;
    }
    const select = $("#source-select");
    select.replaceChildren(...sources.map((s) => {
      const option = document.createElement("option");
      option.value = s.id;
      option.textContent = s.enclosure ? `${s.enclosure} (${s.id})` : s.id;
      option.selected = s.id === this.state.selectedSource;
      return option;
    }));
  }

  /** The enclosure's name for a source id (the id itself when the service gave no name). */
  sourceLabel(id) {
    return this.state.sources.find((s) => s.id === id)?.enclosure || id;
  }

  selectSource(id) {
    this.state.selectedSource = id;
    localStorage.setItem(SOURCE_KEY, id);
    $("#source-select").value = id;
    this.#watchSelected();
    this.live.renderAll();
  }

  /** Ask for the selected source's meters and spectrogram only (the service computes a
   * spectrogram only for sources someone watches); the overview watches none. */
  #watchSelected() {
    const source = this.liveMode === "overview" ? null : this.state.selectedSource;
    this.socket.send({ type: "watch", sources: source ? [source] : [] });
  }

  onSegment(seg) {
    const s = this.state;
    s.segments.push(seg);
    if (s.segments.length > MAX_SEGMENTS) s.segments.splice(0, s.segments.length - MAX_SEGMENTS);
    const encounter = s.openEncounters.get(seg.source);
    if (encounter && seg.encounter_id === encounter.id) {
      encounter.n_segments = (encounter.n_segments ?? 0) + 1;
      if (seg.running_p_success !== undefined && seg.running_p_success !== null) {
        encounter.p_success = seg.running_p_success;
      }
    }
    this.live.onSegment(seg);
    this.overview.changed();
  }

  onEncounter({ action, encounter }) {
    const open = this.state.openEncounters;
    if (action === "stopped" || encounter.ended_at) {
      if (open.get(encounter.source)?.id === encounter.id) open.delete(encounter.source);
    } else {
      open.set(encounter.source, encounter);
    }
    if (encounter.source === this.state.selectedSource) {
      this.live.renderEncounter();
      if (action === "started" || action === "stopped") this.live.rebuildChart();
    }
    this.history.changed(encounter.id);
    this.overview.changed();
  }

  onAlert({ action, alert }) {
    this.state.alerts.set(alert.id, alert);
    this.renderAlerts(action === "raised" ? alert : null);
    if (this.view === "alerts") this.loadAlertLog();
  }

  renderAlerts(raised = null) {
    const open = [...this.state.alerts.values()]
      .filter((a) => !a.acknowledged_at)
      .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || b.id - a.id);
    this.banner.render(open, raised);
    const count = $("#alert-count");
    count.textContent = String(open.length);
    count.hidden = open.length === 0;
    this.overview.changed();
  }

  async acknowledge(alert) {
    try {
      const by = localStorage.getItem("pandapulse.keeper") || "dashboard";
      const updated = await sendJson("POST", `api/alerts/${alert.id}/ack`, { by });
      this.state.alerts.set(updated.id, updated);
      this.renderAlerts();
      if (this.view === "alerts") this.loadAlertLog();
    } catch (err) {
      this.reportError(err, t("alerts.ack_failed"));
      this.renderAlerts();
    }
  }

  async loadAlertLog() {
    const openOnly = $("#alerts-open-only").checked;
    try {
      const alerts = await getJson(`api/alerts?limit=100${openOnly ? "&open=true" : ""}`);
      renderAlertLog($("#alerts-body"), alerts, {
        onAck: (a) => this.acknowledge(a),
        sourceLabel: (id) => this.sourceLabel(id),
      });
    } catch (err) {
      this.reportError(err, t("alerts.log_failed"));
    }
  }

  // ---------------------------------------------------------------- REST actions -----------

  async startEncounter(body) {
    const encounter = await sendJson("POST", "api/encounters", body);
    this.onEncounter({ action: "started", encounter });
    this.toast(t("live.started_toast", { pair: encounter.pair }));
    return encounter;
  }

  async stopEncounter(id) {
    const encounter = await sendJson("POST", `api/encounters/${id}/stop`);
    this.onEncounter({ action: "stopped", encounter });
    this.toast(t("live.stopped_toast"));
    return encounter;
  }

  // ---------------------------------------------------------------- messages ---------------

  reportError(err, what) {
    if (err instanceof Unauthorized) {
      this.showLogin(t("login.expired"));
      return;
    }
    if (what) this.toast(t("common.error_with", { what, detail: errorText(err) }), "error");
  }

  toast(text, cls = "") {
    const node = $("#toast");
    node.textContent = text;
    node.className = `toast ${cls}`;
    node.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { node.hidden = true; }, TOAST_MS);
  }
}

// The token first (the catalogue is a dashboard file), then the language, then the app.
const fromUrl = adoptTokenFromUrl();
await initI18n({ loadJson: (path) => getJson(path) });
const app = new App();
window.pandapulse = app; // for debugging from the console and for the browser tests
app.boot(fromUrl);
