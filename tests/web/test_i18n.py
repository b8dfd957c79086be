"""The dashboard in English and Simplified Chinese (issue 13, section 4).

The catalogues are checked as data (same keys, same placeholders, every key the code asks for
present); then Chromium runs the main flows in each language against the shared service and
looks for anything untranslated: a catalogue key showing as text (what web/js/i18n.js shows for
a missing key), a console error, English words in the Chinese dashboard's own labels, and
anything overflowing its card at 1280x800 and 768x1024.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from service.api.live import I18N_MARKER, LOGIN_KEY_PREFIXES, login_page

from .conftest import SOURCE_ID, Console, Service, layout_problems, new_page

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
LANGUAGES = ["en", "zh-CN"]
REAL_CALL = REPO / ".." / "shared" / "data" / "real-calls" / "giant_panda_twittering.mp3"
LIVE_WAIT_MS = 90_000
VIEWPORTS = [(1280, 800), (768, 1024)]
PLACEHOLDER = re.compile(r"\{(\w+)\}")
ENGLISH_WORD = re.compile(r"[A-Za-z]{3,}")
ALLOWED_ENGLISH = {
    *("PandaPulse", "Raven", "Audacity", "English"),
    *("CSV", "WAV", "FLAC", "OGG", "MP3", "ZIP", "zip", "CPU", "GPU", "dBFS"),
}
"""Names of programs and formats, which the Chinese dashboard writes as they are (and the
language switch names each language in itself)."""
UI_TEXT = (
    "nav a, th, button, label, dt, .pill, h2 > span[data-i18n], h2[data-i18n], h3, .gauge-label,"
    " td.empty, p.empty, .tile-label, .tile-alerts, .tile-open, .split-legend, .alert-banner strong,"
    " .alert-hint, #conn, .spec-axis, #gauge-verdict, [data-testid=upload-verdict]"
)
"""The dashboard's own words (not names, pairs or notes typed by keepers, nor file names)."""


def _catalogue(lang: str) -> dict[str, Any]:
    data = json.loads((WEB / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _placeholders(value: Any) -> set[str]:
    texts = value.values() if isinstance(value, dict) else [value]
    return {name for text in texts for name in PLACEHOLDER.findall(text)}


# ---------------------------------------------------------------- the catalogues as data ----


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    en, zh = _catalogue("en"), _catalogue("zh-CN")
    assert sorted(set(en) - set(zh)) == [], "keys missing from zh-CN.json"
    assert sorted(set(zh) - set(en)) == [], "keys missing from en.json"
    for key in en:
        for lang, value in (("en", en[key]), ("zh-CN", zh[key])):
            if isinstance(value, dict):
                # plural forms (Intl.PluralRules categories); "other" is always there
                assert "other" in value, f"{lang} {key}: no 'other' plural form"
                assert set(value) <= {"zero", "one", "two", "few", "many", "other"}, key
                assert all(isinstance(v, str) and v for v in value.values()), key
            else:
                assert isinstance(value, str) and value.strip(), f"{lang} {key} is empty"
        assert _placeholders(en[key]) == _placeholders(zh[key]), f"placeholders differ in {key}"
    # the Chinese catalogue is Chinese: its labels are not English left untranslated
    same = [
        k
        for k in en
        if isinstance(en[k], str)
        and en[k] == zh[k]
        and {w for w in ENGLISH_WORD.findall(PLACEHOLDER.sub("", en[k]))} - ALLOWED_ENGLISH
    ]
    assert same == [], "left in English in zh-CN.json"


def _keys_used() -> tuple[set[str], set[str]]:
    """Keys the dashboard asks for (t("key"), data-i18n="key", and key-shaped string literals of
    the catalogue's areas, such as a list of table headers), and the prefixes of the keys it
    builds at run time (t(`verdict.${v}`))."""
    namespaces = {key.split(".")[0] for key in _catalogue("en")}
    keys: set[str] = set()
    prefixes: set[str] = set()
    for path in [WEB / "app.js", *sorted((WEB / "js").glob("*.js"))]:
        text = path.read_text(encoding="utf-8")
        keys.update(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", text))
        prefixes.update(re.findall(r"""\b(?:t|hasKey)\(\s*`([\w.]+)\$\{""", text))
        keys.update(
            k
            for k in re.findall(r"""["']([a-z_]+(?:\.[a-z0-9_]+)+)["']""", text)
            if k.split(".")[0] in namespaces
        )
    for page in sorted(WEB.glob("*.html")):
        text = page.read_text(encoding="utf-8")
        keys.update(re.findall(r"""data-i18n(?:-[a-z-]+)?="([\w.]+)\"""", text))
    return keys, prefixes


def test_every_key_the_dashboard_asks_for_is_in_the_catalogues() -> None:
    en = _catalogue("en")
    keys, prefixes = _keys_used()
    assert len(keys) > 100, "the key scan found too little: has the code's t() changed?"
    assert sorted(keys - set(en)) == []
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in en), f"no key starts with {prefix!r}"


def test_the_login_page_carries_its_texts_in_every_language() -> None:
    """The sign-in page cannot fetch the catalogues (no token yet): the service inlines them."""
    raw = (WEB / "login.html").read_text(encoding="utf-8")
    assert I18N_MARKER in raw
    page = login_page()
    inline = re.search(r"const CATALOGUES = (\{.*?\});\n", page)
    assert inline is not None
    catalogues = json.loads(inline.group(1))
    assert sorted(catalogues) == sorted(LANGUAGES)
    wanted = set(re.findall(r"""data-i18n(?:-[a-z-]+)?="([\w.]+)\"""", raw)) | {"login.page_title"}
    for lang in LANGUAGES:
        assert wanted <= set(catalogues[lang]), lang
        assert all(k.startswith(LOGIN_KEY_PREFIXES) for k in catalogues[lang])


# ---------------------------------------------------------------- in the browser ------------


def _namespaces() -> list[str]:
    return sorted({key.split(".")[0] for key in _catalogue("en")})


UNTRANSLATED_JS = """([namespaces, uiSelector]) => {
    const keyPattern = new RegExp(`\\\\b(?:${namespaces.join("|")})\\\\.[a-z0-9_]+(?:\\\\.[a-z0-9_]+)*\\\\b`, "g");
    const keys = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const texts = [document.title];
    while (walker.nextNode()) {
        const parent = walker.currentNode.parentElement;
        if (!parent.closest("script, style")) texts.push(walker.currentNode.nodeValue);
    }
    for (const el of document.querySelectorAll("[placeholder], [title], [aria-label]")) {
        texts.push(el.getAttribute("placeholder") || "", el.getAttribute("aria-label") || "");
        texts.push(el.getAttribute("title") || "");
    }
    for (const text of texts) for (const m of (text || "").matchAll(keyPattern)) keys.add(m[0]);
    const ui = [...document.querySelectorAll(uiSelector)]
        .filter((el) => el.getClientRects().length > 0)
        .map((el) => el.innerText);
    return { keys: [...keys], ui };
}"""


def _check_translated(page: Any, console: Console, lang: str, where: str) -> None:
    found = page.evaluate(UNTRANSLATED_JS, [_namespaces(), UI_TEXT])
    missing = page.evaluate("import('./static/js/i18n.js').then((m) => m.missingKeys())")
    assert missing == [], f"{where}: keys missing from the {lang} catalogue"
    assert found["keys"] == [], f"{where}: catalogue keys show as text"
    if lang == "zh-CN":
        english = sorted(
            {
                word
                for text in found["ui"]
                for word in ENGLISH_WORD.findall(text)
                if word not in ALLOWED_ENGLISH
            }
        )
        assert english == [], f"{where}: English words in the Chinese dashboard's labels"
    assert page.evaluate("document.documentElement.lang") == lang
    assert [e for e in console.errors if "status of 4" not in e] == [], where


def _check_layout(page: Any, where: str) -> None:
    for width, height in VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(300)  # let the charts follow their new width
        assert layout_problems(page) == [], f"{where} at {width}x{height}"
    page.set_viewport_size({"width": VIEWPORTS[0][0], "height": VIEWPORTS[0][1]})


def _acknowledge_all(service: Service) -> None:
    for alert in service.api("GET", "/api/alerts?open=true").json():
        service.api("POST", f"/api/alerts/{alert['id']}/ack", json={"by": "i18n test"})


EXPECTED = {
    "en": {"nav": "Live", "history": "Encounters", "test": "Test alert", "ack": "Acknowledge"},
    "zh-CN": {"nav": "实时", "history": "配对记录", "test": "测试警报", "ack": "确认"},
}


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("lang", "locale"), [("en", "en-US"), ("zh-CN", "zh-CN")])
def test_main_flows_in_the_browsers_language(
    browser: Any, service: Service, screenshots: Path, lang: str, locale: str
) -> None:
    words = EXPECTED[lang]
    context, page, console = new_page(browser, locale=locale)
    try:
        # Live: the language follows the browser; the gauge and the calls fill in.
        page.goto(f"{service.login_url}#live")
        page.wait_for_selector("#conn[data-state=open]")
        assert page.inner_text("nav a[data-view=live]") == words["nav"]
        page.wait_for_function(
            "() => document.querySelector('#gauge-card').dataset.p !== ''", timeout=LIVE_WAIT_MS
        )
        page.wait_for_selector("#calls-body tr[data-segment-id]", timeout=LIVE_WAIT_MS)
        _acknowledge_all(service)
        page.wait_for_selector("#alert-banner", state="hidden", timeout=10_000)
        _check_translated(page, console, lang, "live")
        _check_layout(page, "live")
        if lang == "zh-CN":
            # A few more calls make a more telling picture; not required, so the wait is soft.
            with contextlib.suppress(PlaywrightTimeout):
                page.wait_for_function(
                    "() => Number(document.querySelector('#live-chart').dataset.points) >= 8",
                    timeout=30_000,
                )
            page.screenshot(path=str(screenshots / "live-zh-CN-1280x800.png"))

        # Alerts: a test alert's banner and log entry in this language, acknowledged here.
        page.mouse.click(5, 400)
        service.api("POST", "/api/alerts/test", json={"source": SOURCE_ID})
        page.wait_for_selector("#alert-banner", state="visible", timeout=15_000)
        assert words["test"] in page.inner_text("#alert-banner")
        assert page.inner_text("[data-testid=ack]") == words["ack"]
        _check_translated(page, console, lang, "alert banner")
        page.click("nav a[data-view=alerts]")
        page.wait_for_selector("#alerts-body tr.open", timeout=10_000)
        assert words["test"] in page.inner_text("#alerts-body")
        _check_translated(page, console, lang, "alerts")
        _check_layout(page, "alerts")
        page.click("[data-testid=ack]")
        page.wait_for_selector("#alert-banner", state="hidden", timeout=15_000)

        # History: the list and an encounter's detail with its outcome form.
        page.click("nav a[data-view=history]")
        page.wait_for_selector("#hist-body tr[data-encounter-id]", timeout=15_000)
        assert words["history"] in (page.text_content("#view-history h2") or "")
        page.locator("#hist-body tr[data-encounter-id]").first.click()
        page.wait_for_selector("[data-testid=outcome-form]")
        page.wait_for_selector("[data-testid=history-chart]")
        _check_translated(page, console, lang, "history")
        _check_layout(page, "history")

        # Upload: a real recording scored, its verdict and calls in this language.
        page.click("nav a[data-view=upload]")
        page.set_input_files("#upload-input", str(REAL_CALL))
        page.wait_for_selector("[data-testid=upload-verdict]", timeout=120_000)
        page.wait_for_selector("#upload-status.done")
        _check_translated(page, console, lang, "upload")
        _check_layout(page, "upload")
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_language_switch_is_remembered_and_reaches_the_login_page(
    browser: Any, service: Service
) -> None:
    context, page, console = new_page(browser, locale="en-US")
    try:
        page.goto(f"{service.login_url}#history")
        page.wait_for_selector("#conn[data-state=open]")
        assert page.evaluate("document.documentElement.lang") == "en"
        # Chinese from the switch, though the browser asks for English; the page reloads in it.
        with page.expect_navigation():
            page.select_option("[data-testid=lang-select]", "zh-CN")
        page.wait_for_selector("#conn[data-state=open]")
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        assert page.inner_text("nav a[data-view=history]") == "历史记录"
        assert page.url.endswith("#history")
        page.reload()
        page.wait_for_selector("#conn[data-state=open]")
        assert page.inner_text("nav a[data-view=live]") == "实时"
        _check_translated(page, console, "zh-CN", "after reload")
        # Signed out, the sign-in page speaks the remembered language too...
        context.clear_cookies()
        page.evaluate("sessionStorage.clear()")
        page.goto(f"{service.url}/?token=wrong")
        page.wait_for_selector("#login-error", state="visible")
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        assert page.title() == "PandaPulse · 登录"
        assert page.inner_text("#login-error") == "该令牌未被接受，请检查后重试。"
        assert page.inner_text("button[type=submit]") == "登录"
        # ...and has its own switch, remembered for the dashboard.
        page.select_option("[data-testid=lang-select]", "en")
        assert page.inner_text("button[type=submit]") == "Sign in"
        page.fill("#login-token", service.token)
        page.click("button[type=submit]")
        page.wait_for_selector("#conn[data-state=open]")
        assert page.evaluate("document.documentElement.lang") == "en"
        assert page.inner_text("nav a[data-view=live]") == "Live"
        errors = [e for e in console.errors if "status of 401" not in e]
        assert errors == []
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_login_page_follows_a_chinese_browser(browser: Any, service: Service) -> None:
    context, page, _ = new_page(browser, locale="zh-CN")
    try:
        page.goto(f"{service.url}/")
        page.wait_for_selector("#login-form")
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        assert page.inner_text("label") == "访问令牌"
        found = page.evaluate(UNTRANSLATED_JS, [_namespaces(), "label, button, p"])
        assert found["keys"] == []
        assert not [
            w for t in found["ui"] for w in ENGLISH_WORD.findall(t) if w not in ALLOWED_ENGLISH
        ]
    finally:
        context.close()
