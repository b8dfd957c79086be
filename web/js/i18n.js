// The dashboard's languages: one catalogue per language (web/i18n/<lang>.json, flat
// "area.thing" keys), the language chosen from the browser or by the keeper (remembered in
// localStorage), and numbers, percentages, dates and times formatted with Intl in that locale.
//
// A key missing from the catalogue shows as the key itself and logs a console error, so the
// browser tests (tests/web/test_i18n.py) see it; `missingKeys()` lists them.
//
// Catalogue values are plain text with `{name}` placeholders, or, for counts, an object of
// Intl.PluralRules categories ({"one": "{n} call", "other": "{n} calls"}) chosen by `params.n`.
// A number given as a parameter is formatted in the locale (pass String(id) to keep an id raw).

export const LANGUAGES = { en: "English", "zh-CN": "简体中文" };
export const DEFAULT_LANGUAGE = "en";
const STORAGE_KEY = "pandapulse.lang";
const DASH = "–";

let current = DEFAULT_LANGUAGE;
let messages = {};
const missing = new Set();

/** The language to use: the keeper's remembered choice, else the browser's (zh* -> zh-CN). */
export function detectLanguage(
  stored = safeStorageGet(STORAGE_KEY),
  preferred = navigator.languages?.length ? navigator.languages : [navigator.language || ""],
) {
  if (stored && Object.hasOwn(LANGUAGES, stored)) return stored;
  for (const tag of preferred) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return DEFAULT_LANGUAGE;
}

function safeStorageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

/**
 * Load the language's catalogue and translate the page. `loadJson(path)` fetches a dashboard
 * file (the app passes its authenticated getJson); `catalogue` skips the fetch (login page).
 */
export async function initI18n({ loadJson, catalogue, lang = detectLanguage() } = {}) {
  current = Object.hasOwn(LANGUAGES, lang) ? lang : DEFAULT_LANGUAGE;
  if (catalogue) messages = catalogue;
  else {
    try {
      messages = await loadJson(`static/i18n/${current}.json`);
    } catch (err) {
      console.error(`i18n: the ${current} catalogue could not be loaded: ${err.message || err}`);
      messages = {};
    }
  }
  document.documentElement.lang = current;
  applyTranslations(document);
  return current;
}

/** Remember the keeper's choice (the caller reloads the page to apply it everywhere). */
export function rememberLanguage(lang) {
  if (!Object.hasOwn(LANGUAGES, lang)) throw new Error(`unknown language ${lang}`);
  localStorage.setItem(STORAGE_KEY, lang);
}

export function language() {
  return current;
}

/** Keys asked for that the catalogue lacks (the tests read it; the console has them too). */
export function missingKeys() {
  return [...missing];
}

/** The text for `key` in the current language, `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  let text = Object.hasOwn(messages, key) ? messages[key] : undefined;
  if (text !== null && typeof text === "object") {
    const n = Number(params.n ?? params.count ?? 0);
    const category = new Intl.PluralRules(current).select(n);
    text = text[category] ?? text.other;
  }
  if (typeof text !== "string") {
    if (!missing.has(key)) {
      missing.add(key);
      console.error(`i18n: missing key "${key}" in the ${current} catalogue`);
    }
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (whole, name) => {
    if (!Object.hasOwn(params, name)) return whole;
    const value = params[name];
    return typeof value === "number" ? fmtNumber(value) : String(value ?? "");
  });
}

/** Whether the catalogue has `key` (for optional texts, such as an API error code's). */
export function hasKey(key) {
  return Object.hasOwn(messages, key);
}

/**
 * What to tell the keeper about a failed request (an ApiError from api.js): the catalogue's
 * sentence for its error code when there is one, followed by the service's own detail (English,
 * from the service); otherwise that detail alone.
 */
export function errorText(err) {
  const code = err?.code;
  if (code && hasKey(`error.${code}`)) {
    const known = t(`error.${code}`);
    // network errors are detected here, and a 401's detail is the service's generic sentence
    if (code === "network" || code === "unauthorized" || !err.detail) return known;
    return t("common.error_with", { what: known, detail: err.detail });
  }
  return err?.detail || err?.message || String(err);
}

const ATTRIBUTES = [
  ["i18nPlaceholder", "placeholder"],
  ["i18nTitle", "title"],
  ["i18nAriaLabel", "aria-label"],
];

/**
 * Translate static markup: `data-i18n="key"` sets the element's text; `data-i18n-placeholder`,
 * `data-i18n-title` and `data-i18n-aria-label` set those attributes.
 */
export function applyTranslations(root = document) {
  const scope = root.querySelectorAll ? root : document;
  const nodes = [...scope.querySelectorAll("[data-i18n], [data-i18n-placeholder], [data-i18n-title], [data-i18n-aria-label]")];
  if (root instanceof Element && root.matches("[data-i18n], [data-i18n-placeholder], [data-i18n-title], [data-i18n-aria-label]")) {
    nodes.unshift(root);
  }
  for (const node of nodes) {
    if (node.dataset.i18n) node.textContent = t(node.dataset.i18n);
    for (const [data, attr] of ATTRIBUTES) {
      if (node.dataset[data]) node.setAttribute(attr, t(node.dataset[data]));
    }
  }
}

// ---------------------------------------------------------------- formatting --------------

const formatters = new Map();

function numberFormat(options) {
  const id = `${current}|${JSON.stringify(options)}`;
  if (!formatters.has(id)) formatters.set(id, new Intl.NumberFormat(current, options));
  return formatters.get(id);
}

function isNumber(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** A number in the locale ("1,234.5"); `digits` fixes the decimals. */
export function fmtNumber(n, digits = null) {
  if (!isNumber(n)) return DASH;
  const options = digits === null ? { maximumFractionDigits: 3 } : { minimumFractionDigits: digits, maximumFractionDigits: digits };
  return numberFormat(options).format(n);
}

/** A probability 0..1 as a percentage in the locale ("42%"). */
export function fmtPercent(p, digits = 0) {
  if (!isNumber(p)) return DASH;
  return numberFormat({ style: "percent", minimumFractionDigits: digits, maximumFractionDigits: digits }).format(p);
}

/** A number with a unit Intl knows ("2.0 s" / "2.0秒", "12 ms", "44,100 Hz"). */
export function fmtUnit(n, unit, digits = null) {
  if (!isNumber(n)) return DASH;
  const options = { style: "unit", unit, unitDisplay: "short" };
  if (digits !== null) Object.assign(options, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  else options.maximumFractionDigits = 3;
  return numberFormat(options).format(n);
}

/** Seconds with a unit ("2.0 s"). */
export function fmtSeconds(s, digits = 1) {
  return fmtUnit(s, "second", digits);
}

function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = value instanceof Date ? value : new Date(typeof value === "number" ? value : String(value));
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A clock time ("14:05:09") in the locale. */
export function fmtTime(value, { seconds = true } = {}) {
  const date = toDate(value);
  if (!date) return DASH;
  return date.toLocaleTimeString(current, {
    hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined,
  });
}

/** A date and time ("Dec 4, 14:05" / "12月4日 14:05"), with the year when not this year's. */
export function fmtDateTime(value) {
  const date = toDate(value);
  if (!date) return DASH;
  const thisYear = date.getFullYear() === new Date().getFullYear();
  return date.toLocaleString(current, {
    year: thisYear ? undefined : "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

/** A date ("Dec 4, 2026" / "2026年12月4日"). */
export function fmtDate(value) {
  const date = toDate(value);
  if (!date) return DASH;
  return date.toLocaleDateString(current, { year: "numeric", month: "short", day: "numeric" });
}

/** How long ago, from a number of seconds ("5 seconds ago" / "5秒钟前"). */
export function fmtAgo(seconds) {
  if (!isNumber(seconds)) return DASH;
  const rtf = new Intl.RelativeTimeFormat(current, { numeric: "always", style: "short" });
  const s = Math.max(0, seconds);
  if (s < 10) return rtf.format(-Math.round(s * 10) / 10, "second");
  if (s < 60) return rtf.format(-Math.round(s), "second");
  if (s < 3600) return rtf.format(-Math.round(s / 60), "minute");
  if (s < 86400) return rtf.format(-Math.round(s / 3600), "hour");
  return rtf.format(-Math.round(s / 86400), "day");
}

/** Which language the keeper can switch to, for a <select>: [[code, name], ...]. */
export function languageChoices() {
  return Object.entries(LANGUAGES);
}
