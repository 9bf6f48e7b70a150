"""API token scopes: each route that takes a token asks for exactly one scope, a token has only those it
was made with, and one outside its scope gets 403 naming the scope it lacks."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from syndicate import db
from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.http import api_tokens
from syndicate.models import ApiToken, Article, Subscriber
from syndicate.newsletters import lists
from syndicate.subscribers import consent
from syndicate.web.app import create_app

BREAKING = {"url": "https://news.example/2026/05/breaking", "title": "BREAKING: the harbour is on fire",
            "guid": "https://news.example/?p=666", "categories": ["Breaking"],
            "content_html": "<p>Click here to donate to the relief fund.</p>"}
COMPLAINT = {"type": "complaint", "email": "ana@example.com", "id": "forged-1"}
PASSWORD = "correct horse battery"

# Every route that takes an API token, and the one scope it asks for.
ROUTES = {
    "articles:push": lambda client, headers: client.post("/api/articles", json=BREAKING, headers=headers),
    "metrics:read": lambda client, headers: client.get("/metrics", headers=headers),
    "events:bounces": lambda client, headers: client.post("/api/events/bounces", json=COMPLAINT, headers=headers),
    "desk:api": lambda client, headers: client.get("/api/v1/me", headers=headers),
}


@pytest.fixture
def syndicate(svc):
    """`syndicate …` in this process, on the test's database; an error of ours is raised, then printed."""
    env = {"SYNDICATE_DATA_DIR": str(svc.settings.data_dir), "SYNDICATE_DATABASE_URL": svc.settings.database_url,
           "SYNDICATE_SECRET_KEY": svc.settings.secret_key, "SYNDICATE_BASE_URL": svc.settings.base_url}

    def run(*args: str):
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=True)
        result.said = result.output + str(result.exception or "")
        return result

    return run


@pytest.fixture
def client(svc):
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture
def reader(svc) -> None:
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
        consent.subscribe(session, "ana@example.com", [daily.id], confirmed=True)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def articles(svc) -> list[str]:
    with transaction(svc.Session) as session:
        return list(session.scalars(select(Article.title)))


def reader_status(svc) -> str:
    with transaction(svc.Session) as session:
        return session.scalar(select(Subscriber.status).where(Subscriber.email == "ana@example.com"))


def made(syndicate, *args: str) -> str:
    result = syndicate("token", "create", *args)
    assert result.exit_code == 0, result.said
    return result.stdout.strip()


# ── the attacks ──────────────────────────────────────────────────────────────


def test_the_token_made_for_the_metrics_scraper_cannot_push_a_breaking_story(svc, client, syndicate):
    scraper = made(syndicate, "prometheus", "--scope", "metrics:read")

    pushed = ROUTES["articles:push"](client, bearer(scraper))

    assert pushed.status_code == 403
    assert pushed.json()["scope"] == "articles:push"
    assert "lacks the scope 'articles:push'" in pushed.json()["error"]
    assert "--scope articles:push" in pushed.json()["error"]  # what to do about it
    assert pushed.headers["www-authenticate"] == (
        'Bearer realm="syndicate", error="insufficient_scope", scope="articles:push"')
    assert articles(svc) == []
    assert ROUTES["metrics:read"](client, bearer(scraper)).status_code == 200  # what it was made for still works


def test_a_token_that_pushes_stories_cannot_post_complaints(svc, client, syndicate, reader):
    cms = made(syndicate, "wordpress", "--scope", "articles:push")

    forged = ROUTES["events:bounces"](client, bearer(cms))

    assert forged.status_code == 403 and forged.json()["scope"] == "events:bounces"
    assert reader_status(svc) == "confirmed"
    assert ROUTES["articles:push"](client, bearer(cms)).status_code == 201


@pytest.mark.parametrize("scope", ["articles:push", "metrics:read", "events:bounces"])
def test_each_route_takes_a_token_with_its_scope_and_refuses_every_other(svc, client, syndicate, reader, scope):
    token = made(syndicate, scope, "--scope", scope)

    answers = {route: call(client, bearer(token)) for route, call in ROUTES.items()}

    assert answers[scope].status_code in (200, 201), answers[scope].text
    for route, answer in answers.items():
        if route != scope:
            assert answer.status_code == 403, (route, answer.status_code)
            assert answer.json()["scope"] == route
            assert f'scope="{route}"' in answer.headers["www-authenticate"]


def test_an_editors_token_from_the_desk_acts_on_the_desks_api_and_nothing_else(svc, client, reader):
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
    page = client.get("/desk/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    client.post("/desk/login", data={"csrf": csrf, "username": "ada", "password": PASSWORD, "next": "/desk"})
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/desk/account").text).group(1)

    created = client.post("/desk/account/tokens", data={"csrf": csrf, "label": "script"})

    token = re.search(r"<code>(syn_[\w-]+)</code>", created.text).group(1)
    assert re.search(r"<td>ada:script</td><td><code>desk:api</code></td>", created.text)
    fresh = TestClient(create_app())  # no cookie: the token alone
    assert ROUTES["desk:api"](fresh, bearer(token)).status_code == 200
    for route in ("articles:push", "metrics:read", "events:bounces"):
        assert ROUTES[route](fresh, bearer(token)).status_code == 403
    assert articles(svc) == [] and reader_status(svc) == "confirmed"


# ── making tokens ────────────────────────────────────────────────────────────


def test_a_token_without_a_scope_is_refused_with_every_scope_and_what_it_allows(svc, syndicate):
    refused = syndicate("token", "create", "wordpress")

    assert refused.exit_code != 0
    assert "--scope" in refused.said
    for scope, allows in api_tokens.SCOPES.items():
        assert scope in refused.said and allows in refused.said
    assert json.loads(syndicate("token", "list", "--json").stdout) == []  # nothing half-made


@pytest.mark.parametrize("args, says", [
    (["wordpress", "--scope", "articles:write"], "unknown scope 'articles:write'"),
    (["wordpress", "--scope", "desk:api"], "--editor USER"),
    (["ada:cms", "--editor", "ada", "--scope", "articles:push"], "only the scope 'desk:api'"),
])
def test_it_refuses_a_scope_that_does_not_exist_or_does_not_fit_the_token(svc, syndicate, args, says):
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)

    refused = syndicate("token", "create", *args)

    assert refused.exit_code != 0 and says in refused.said
    assert json.loads(syndicate("token", "list", "--json").stdout) == []


def test_an_editors_token_gets_desk_api_without_naming_it(svc, syndicate):
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)

    result = syndicate("token", "create", "ada:script", "--editor", "ada")

    assert result.exit_code == 0 and "desk:api" in result.stderr
    assert [row["scopes"] for row in json.loads(syndicate("token", "list", "--json").stdout)] == [["desk:api"]]


def test_token_list_shows_each_tokens_scopes(svc, syndicate):
    made(syndicate, "wordpress", "--scope", "articles:push")
    made(syndicate, "ses", "--scope", "events:bounces", "--scope", "metrics:read")

    listed = json.loads(syndicate("token", "list", "--json").stdout)
    table = syndicate("token", "list").stdout

    assert [(row["name"], row["scopes"]) for row in listed] == [
        ("ses", ["metrics:read", "events:bounces"]), ("wordpress", ["articles:push"])]
    assert "SCOPES" in table and re.search(r"ses\s+metrics:read events:bounces\s+active", table)


# ── tokens made before scopes ────────────────────────────────────────────────


def test_tokens_made_before_scopes_keep_doing_what_they_did_and_nothing_more(make_settings, tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    db.upgrade(engine, "0008")
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO editors (id, username, password_hash, created_at) "
                                   "VALUES (1, 'ada', 'x', '2026-01-01 00:00:00')"))
        connection.execute(sa.text(
            "INSERT INTO api_tokens (name, token_hash, created_at, editor_id) VALUES "
            "('wordpress', :cms, '2026-01-01 00:00:00', NULL), ('ada:script', :desk, '2026-01-01 00:00:00', 1)"),
            {"cms": api_tokens.hash_token("syn_cms"), "desk": api_tokens.hash_token("syn_desk")})

    db.upgrade(engine)

    with sa.orm.Session(engine) as session:
        scopes = {t.name: api_tokens.scopes_of(t) for t in session.scalars(select(ApiToken))}
        assert scopes == {"wordpress": ["articles:push", "metrics:read", "events:bounces"],
                          "ada:script": ["desk:api"]}
        api_tokens.authenticate(session, "syn_cms", "articles:push")
        with pytest.raises(api_tokens.OutOfScope):
            api_tokens.authenticate(session, "syn_cms", "desk:api")
        with pytest.raises(api_tokens.OutOfScope):
            api_tokens.authenticate(session, "syn_desk", "articles:push")
    engine.dispose()
