"""Who may reach what, checked over every route the app has (so a route added later is checked too):
nothing but the public pages without signing in; every form of the desk needs its CSRF token; the API
needs an editor's own, live token — not a CMS's, not a revoked one, not a disabled editor's."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from desk_client import PASSWORD, add_editor, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.http import api_tokens
from syndicate.models import Editor, utcnow
from syndicate.web.app import create_app

# Reachable by anyone, on purpose: a reader's pages (their signed token is the credential: the undo of an
# unsubscribe, their data's download, the erasure a mailed link confirms), the CMS push
# and bounce webhooks, /metrics and an edition's results (which check their own tokens), health, the API's
# documentation with its files, and an edition's counted story links (signed: they only ever lead to the story).
PUBLIC = {
    "/", "/subscribe", "/confirm/{token}", "/u/{token}", "/p/{token}", "/n/{slug}", "/n/{slug}/feed.atom",
    "/n/{slug}/{number}", "/healthz", "/api/articles", "/api/events/bounces", "/metrics",
    "/docs", "/docs/assets/{name}", "/openapi.json", "/desk/login", "/r/{edition_id}/{link}",
    "/api/editions/{edition_id}/results", "/u/{token}/undo", "/p/{token}/data.json", "/erase/{token}",
}
FILL = {"action": "pause", "slug": "morning", "account_name": "x-main"}  # path parameters; the rest get 1


def every_route():
    """The app's routes, with those of the included routers (FastAPI keeps those in a wrapper)."""
    for route in create_app().routes:
        if hasattr(route, "effective_route_contexts"):
            yield from route.effective_route_contexts()
        else:
            yield route


def routes() -> list[tuple[str, str, str]]:
    """(method, template, a concrete path) for every route of the app."""
    found = []
    for route in every_route():
        methods = getattr(route, "methods", None) or {"GET"}
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: str(FILL.get(m.group(1), 1)), route.path)
            found.append((method, route.path, path))
    return found


@pytest.fixture
def client(svc):
    add_editor(svc)
    return desk_client()


def test_every_route_is_public_on_purpose_or_belongs_to_the_desk_or_its_api():
    for _, template, _ in routes():
        assert template in PUBLIC or template.startswith(("/desk", "/api/v1/")), (
            f"{template} is neither in the public list nor under /desk or /api/v1: decide who may reach it")


def test_nothing_of_the_desk_opens_without_a_session(client):
    for method, template, path in routes():
        if not template.startswith("/desk") or template in PUBLIC:
            continue
        page = client.request(method, path)
        script = client.request(method, path, headers={"Accept": "application/json"})
        if method == "GET":
            assert page.status_code == 303 and page.headers["location"].startswith("/desk/login?next="), path
            assert script.status_code == 401 and "sign in" in script.json()["error"], path
        else:  # refused before anything runs: no CSRF token without a session, or sent to sign in first
            assert page.status_code == 403 or (
                page.status_code == 303 and page.headers["location"].startswith("/desk/login")), (method, path)


def test_every_form_of_the_desk_needs_the_csrf_token_even_when_signed_in(client):
    sign_in(client)
    for method, template, path in routes():
        if template.startswith("/desk") and method != "GET":
            for data in ({}, {"csrf": "forged"}):
                response = client.request(method, path, data=data)
                assert response.status_code == 403, (method, path, response.status_code)
                assert "out of date or came from another site" in response.text


def test_the_api_refuses_requests_without_an_editors_live_token(client, svc):
    with transaction(svc.Session) as session:
        _, cms = api_tokens.create_token(session, "wordpress", scopes=["articles:push"])
        ada = editors.by_username(session, "ada")
        _, revoked = api_tokens.create_token(session, "ada:old", editor=ada)
        api_tokens.revoke(session, "ada:old")
        bob = editors.add(session, "bob", PASSWORD)
        _, disabled = api_tokens.create_token(session, "bob:script", editor=bob)
        bob.disabled_at = utcnow()
    api = [(method, path) for method, template, path in routes() if template.startswith("/api/v1/")]
    assert len(api) >= 3
    for method, path in api:
        for headers, why in (({}, "an API token"), ({"Authorization": f"Bearer {revoked}"}, "revoked"),
                             ({"Authorization": f"Bearer {disabled}"}, "disabled"),
                             ({"Authorization": "Bearer syn_guess"}, "not known")):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.status_code)
            assert why in response.json()["error"] and response.headers["www-authenticate"].startswith("Bearer")
        # A CMS's token is a good token, but not for this: 403, naming the scope it lacks (RFC 6750).
        response = client.request(method, path, headers={"Authorization": f"Bearer {cms}"})
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["scope"] == "desk:api" and "desk:api" in response.json()["error"]
        assert 'error="insufficient_scope", scope="desk:api"' in response.headers["www-authenticate"]


def test_an_editor_makes_a_token_on_the_desk_uses_it_and_revokes_it(client, svc):
    sign_in(client)
    page = client.get("/desk/account").text
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    created = client.post("/desk/account/tokens", data={"csrf": token, "label": "morning-script"})
    secret = re.search(r"<code>(syn_[\w-]+)</code>", created.text).group(1)
    with transaction(svc.Session) as session:  # only the hash is kept
        assert secret not in str([t.token_hash for t in api_tokens.list_tokens(session)])
    bearer = {"Authorization": f"Bearer {secret}"}
    fresh = TestClient(create_app(), base_url="http://testserver")  # no cookie: the token alone
    assert fresh.get("/api/v1/me", headers=bearer).json() == {"username": "ada", "timezone": "UTC"}
    again = client.post("/desk/account/tokens", data={"csrf": token, "label": "morning-script"})
    assert again.status_code == 400 and "already exists" in again.text
    client.post("/desk/account/tokens/revoke", data={"csrf": token, "token_name": "ada:morning-script"})
    assert fresh.get("/api/v1/me", headers=bearer).status_code == 401


def test_an_editor_cannot_revoke_another_editors_token(client, svc):
    with transaction(svc.Session) as session:
        api_tokens.create_token(session, "bob:script", editor=editors.add(session, "bob", PASSWORD))
    sign_in(client)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/desk/account").text).group(1)
    refused = client.post("/desk/account/tokens/revoke", data={"csrf": token, "token_name": "bob:script"})
    assert refused.status_code == 400 and "no token named" in refused.text
    with transaction(svc.Session) as session:
        assert all(t.revoked_at is None for t in api_tokens.list_tokens(session))


def test_the_desk_shows_times_in_the_zone_the_editor_chose(client, svc):
    sign_in(client)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/desk/account").text).group(1)
    bad = client.post("/desk/account/timezone", data={"csrf": token, "timezone": "Mars/Olympus"})
    assert bad.status_code == 400 and "IANA" in bad.text
    assert client.post("/desk/account/timezone", data={"csrf": token, "timezone": "Asia/Tokyo"}).status_code == 303
    with transaction(svc.Session) as session:
        assert session.scalar(select(Editor.timezone)) == "Asia/Tokyo"
    assert 'selected>Asia/Tokyo' in client.get("/desk/account").text


def test_the_api_is_documented_with_openapi_and_the_desk_pages_are_not(client):
    spec = client.get("/openapi.json").json()
    assert not [p for p in spec["paths"] if p.startswith("/desk")]
    desk_api = [p for p in spec["paths"] if p.startswith("/api/v1/")]
    assert "/api/v1/me" in desk_api and "/api/v1/today" in desk_api
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in desk_api:
        for operation in spec["paths"][path].values():
            assert operation.get("security") == [{"HTTPBearer": []}], path
            assert operation.get("description") or operation.get("summary"), path
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("route", [r for r in every_route() if r.path.startswith("/api/v1/")],
                         ids=lambda r: f"{sorted(r.methods)} {r.path}")
def test_every_api_route_says_what_it_does(route):
    assert (route.endpoint.__doc__ or "").strip(), f"{route.path}: give it a docstring (it becomes /docs)"
