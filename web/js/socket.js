// The live WebSocket: connects, hands each JSON message on, and reconnects by itself with
// exponential backoff (plus jitter) when the service goes away. A reconnect always starts with a
// fresh `snapshot`, so nothing else has to resynchronise.

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
// `stats` arrives every 2 s; this long without any message means the link is dead even if the
// socket has not noticed yet (a sleeping laptop, a dropped Wi-Fi).
const SILENCE_LIMIT_MS = 12_000;
const CLOSE_UNAUTHORIZED = 4401;
const PROTOCOL_VERSION = 1;

export class LiveSocket {
  /**
   * @param {() => string} urlFor builds the URL for each attempt (the token may have changed).
   * @param {object} on callbacks: message(msg), state({state, retryInMs, attempt}),
   *   unauthorized(), silentClose() -> Promise<boolean> (true: stop retrying).
   */
  constructor(urlFor, on) {
    this.urlFor = urlFor;
    this.on = on;
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.watchdog = null;
    this.stopped = true;
    this.lastMessageAt = 0;
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.#connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "client stopped");
    }
    this.#state("stopped");
  }

  /** Send a message to the service (only `watch` exists); dropped while not connected. */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
    }
  }

  /** Reconnect now (the keeper pressed "retry", or the page became visible again). */
  retryNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.retryTimer);
    this.#connect();
  }

  #state(state, extra = {}) {
    this.on.state?.({ state, attempt: this.attempt, ...extra });
  }

  #connect() {
    clearTimeout(this.retryTimer);
    this.#state(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.urlFor());
    } catch {
      this.#scheduleRetry();
      return;
    }
    this.ws = ws;
    let gotMessage = false;
    ws.onopen = () => {
      this.lastMessageAt = Date.now();
      clearInterval(this.watchdog);
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastMessageAt > SILENCE_LIMIT_MS && this.ws === ws) {
          ws.close(4000, "silent");
          this.#closed(ws, { code: 4000 }, gotMessage);
        }
      }, 1000);
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastMessageAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        console.warn("pandapulse: ignored a message that is not JSON");
        return;
      }
      if (msg.v !== PROTOCOL_VERSION) {
        console.warn(`pandapulse: ignored a message of protocol version ${msg.v}`);
        return;
      }
      if (msg.type === "snapshot") {
        gotMessage = true;
        this.attempt = 0;
        this.#state("open");
      }
      this.on.message(msg);
    };
    ws.onclose = (event) => this.#closed(ws, event, gotMessage);
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  async #closed(ws, event, gotMessage) {
    if (this.ws !== ws) return;
    this.ws = null;
    clearInterval(this.watchdog);
    if (this.stopped) return;
    if (event.code === CLOSE_UNAUTHORIZED) {
      this.stopped = true;
      this.#state("unauthorized");
      this.on.unauthorized?.();
      return;
    }
    // A socket refused before it opened does not say why: let the app ask the REST side
    // (a 401 there means the token is wrong, not that the service is down).
    if (!gotMessage && this.on.silentClose) {
      const giveUp = await this.on.silentClose();
      if (giveUp || this.stopped) return;
    }
    this.#scheduleRetry();
  }

  #scheduleRetry() {
    if (this.stopped) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.#state("waiting", { retryInMs: delay, retryAt: Date.now() + delay });
    this.retryTimer = setTimeout(() => this.#connect(), delay);
  }
}
