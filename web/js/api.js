// REST and WebSocket access to the PandaPulse service (docs/PROTOCOL.md).
//
// The access token lives in sessionStorage (it is gone when the browser tab closes). REST calls
// send it as `Authorization: Bearer`; the WebSocket takes it as `?token=` because browsers
// cannot set WebSocket headers.

const TOKEN_KEY = "pandapulse.token";

export class ApiError extends Error {
  /** An answer with a 4xx/5xx status; `code` and `detail` come from the JSON error body. */
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

export class Unauthorized extends ApiError {
  constructor(detail) {
    super(401, "unauthorized", detail || "The service needs a valid access token.");
    this.name = "Unauthorized";
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * Take `?token=` from the address bar into sessionStorage and remove it from the URL (and from
 * the browser history entry), keeping any other query parameters and the hash.
 */
export function adoptTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token === null) return false;
  url.searchParams.delete("token");
  setToken(token.trim());
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  return true;
}

/** Resolve a service path against the page (works when the service sits under a proxy prefix). */
export function serviceUrl(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).toString();
}

function authHeaders(extra = {}) {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

async function errorFrom(response) {
  let code = "";
  let detail = "";
  try {
    const body = await response.json();
    code = body.error || "";
    detail = body.detail || "";
    if (typeof detail !== "string") detail = JSON.stringify(detail);
  } catch {
    detail = `${response.status} ${response.statusText}`;
  }
  if (response.status === 401) return new Unauthorized(detail);
  return new ApiError(response.status, code, detail);
}

/** fetch() with the token; resolves to the Response, rejects with ApiError on 4xx/5xx. */
export async function request(path, { method = "GET", json, body, headers = {}, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(serviceUrl(path), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The service cannot be reached.");
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export async function sendJson(method, path, json) {
  return (await request(path, { method, json: json ?? {} })).json();
}

/** Fetch an authenticated resource as a Blob (clips, CSV exports). */
export async function getBlob(path) {
  return (await request(path)).blob();
}

/** Download an authenticated file: fetch with the header, then save it through a blob URL. */
export async function download(path, filename) {
  const blob = await getBlob(path);
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function liveSocketUrl() {
  const url = new URL("ws/live", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const token = getToken();
  if (token) url.searchParams.set("token", token);
  return url.toString();
}
