"""The Alerts view in Chromium: the test-alert button sends through every channel (a webhook,
an Apprise e-mail to a real SMTP server, an Apprise JSON receiver that fails first), and each
channel's result shows in the alert's row, by a label without the URLs' secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.service.test_notify import _Mailbox, free_port, receiver_server, smtp_server

from .conftest import DEMO_MODEL, new_page, start_service

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]


def test_the_test_button_shows_every_channels_result(
    browser: Any, tmp_path: Path, untrained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = _Mailbox()
    smtp_port = free_port()
    with (
        smtp_server(mailbox, smtp_port),
        receiver_server() as (chat, chat_got),
        receiver_server() as (hook, hook_got),
    ):
        chat_got.statuses = [500]  # the chat service fails once, then takes it
        notify = [
            f"mailto://127.0.0.1:{smtp_port}?to=keeper@example.org&from=pp@example.org",
            f"json://bot-user:chat-secret-9e1@{chat}/notify",
        ]
        monkeypatch.setenv("PANDAPULSE__ALERTS__NOTIFY", json.dumps(notify))
        monkeypatch.setenv("PANDAPULSE__ALERTS__WEBHOOK_URLS", json.dumps([f"http://{hook}/h"]))
        monkeypatch.setenv("PANDAPULSE__ALERTS__RETRY_SCHEDULE_S", "[0.5]")
        model = DEMO_MODEL if DEMO_MODEL.is_file() else untrained_checkpoint
        # No automatic encounters: no failure alert of the synthetic pair mixes in.
        service = start_service(tmp_path, model, encounter={"auto": False})
        context, page, console = new_page(browser)
        try:
            page.goto(service.login_url)
            page.wait_for_selector("#conn[data-state=open]")
            page.click("nav a[data-view=alerts]")
            page.click("#alerts-test")
            alert = service.wait_for(
                lambda: next(
                    (a for a in service.api("GET", "/api/alerts").json() if a["kind"] == "test"),
                    None,
                ),
                "the test alert",
            )
            row = page.locator(f"#alerts-body tr[data-alert-id='{alert['id']}']")
            row.wait_for()
            # Every channel ends delivered, and the page shows it without a reload.
            page.wait_for_function(
                "id => { const ds = document.querySelectorAll("
                "`#alerts-body tr[data-alert-id='${id}'] .delivery`);"
                " return ds.length === 3 && [...ds].every(d => d.dataset.status === 'delivered'); }",
                arg=alert["id"],
                timeout=30_000,
            )
            text = row.inner_text()
            assert f"E-Mail · mailto://127.0.0.1:{smtp_port}" in text
            assert f"JSON · json://{chat}" in text and f"Webhook · http://{hook}" in text
            assert "chat-secret-9e1" not in page.content() and "bot-user" not in page.content()
            assert len(mailbox.messages) == 1 and len(hook_got.accepted) == 1
            assert len(chat_got.accepted) == 1 and chat_got.refused == 1
            assert console.errors == []
        finally:
            context.close()
            service.kill()
