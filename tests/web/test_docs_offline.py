"""``/docs`` renders with no internet: Swagger UI's files are vendored (web/vendor/swagger-ui).

A box in an enclosure's service room has no internet; Chromium here gets none either (every
request that does not go to the service is aborted and recorded), and the page must still list
every operation of the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest

from .conftest import Service, new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]

METHODS = {"get", "put", "post", "delete", "patch"}


def test_api_docs_render_without_internet(browser: Any, service: Service) -> None:
    context, page, console = new_page(browser)
    outside: list[str] = []

    def only_the_service(route: Any) -> None:
        if urlparse(route.request.url).hostname in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_service)
    try:
        page.goto(f"{service.url}/docs?token={service.token}")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        schema = service.api("GET", "/openapi.json").json()
        operations = {
            (method.upper(), path)
            for path, item in schema["paths"].items()
            for method in item
            if method in METHODS
        }
        page.wait_for_function(
            "(n) => document.querySelectorAll('.swagger-ui .opblock').length === n",
            arg=len(operations),
            timeout=15_000,
        )
        shown = page.evaluate(
            """() => [...document.querySelectorAll('.swagger-ui .opblock-summary')].map((s) => [
                s.querySelector('.opblock-summary-method').textContent.trim(),
                s.querySelector('.opblock-summary-path').textContent.replace(/\\u200b/g, '').trim(),
            ])"""
        )
        assert {(method, path) for method, path in shown} == operations
        assert page.title() == "PandaPulse API"
        assert outside == [], "the docs page reached outside the box"
        assert console.errors == []
    finally:
        context.close()
