"""/docs works offline: Swagger UI's files come from a Python package, served by the app itself, and the page's
Content-Security-Policy lets them run (its scripts carry the response's nonce). A browser with every other host
cut off still shows the API's operations."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from conftest import SHOTS, wait_in_page
from syndicate.web.app import create_app


@pytest.fixture
def web(svc):
    with TestClient(create_app()) as client:
        yield client


def test_docs_reference_only_our_own_urls_and_each_answers(web):
    answer = web.get("/docs")
    assert answer.status_code == 200
    page = answer.text
    assert "cdn" not in page.lower() and "http://" not in page and "https://" not in page
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(urls) == 3 and all(u.startswith("/docs/assets/") for u in urls)
    for url in urls:
        asset = web.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    assert web.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert web.get("/docs/assets/index.html").status_code == 404  # only what the page loads
    assert web.get("/docs/assets/..%2F..%2F__init__.py").status_code == 404


def test_the_docs_scripts_carry_the_nonce_the_policy_allows(web):
    answer = web.get("/docs")
    nonce = re.search(r"script-src 'nonce-([^']+)'", answer.headers["content-security-policy"]).group(1)
    scripts = re.findall(r"<script[^>]*>", answer.text)
    assert len(scripts) == 2 and all(f'nonce="{nonce}"' in s for s in scripts)


def test_swagger_ui_shows_the_api_with_every_other_host_cut_off(browser, served):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    asked_elsewhere, refused = [], []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)

    def only_ours(route):
        if route.request.url.startswith(served):
            return route.continue_()
        asked_elsewhere.append(route.request.url)
        return route.abort()

    page.route("**/*", only_ours)
    page.goto(served + "/docs")
    wait_in_page(page, "document.querySelectorAll('.opblock').length > 10")
    assert "/api/articles" in page.locator("#swagger-ui").inner_text()
    assert page.locator(".opblock-tag").count() > 3
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "docs-offline.png"))
    assert asked_elsewhere == [] and refused == []
