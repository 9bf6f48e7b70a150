"""Push, not only poll: a CMS sends a story with an API token the moment it is published.

POST /api/articles normalises and deduplicates a story exactly as polling does;
repeating a push is harmless, and a push without a valid token stores nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from starlette.testclient import TestClient

from conftest import configured
from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.errors import InvalidInput, NotFound
from syndicate.http import api_tokens
from syndicate.http.api_tokens import NotAuthenticated
from syndicate.ingest import documents, push
from syndicate.models import ApiToken, Article, Post
from syndicate.newsletters import editions, lists
from syndicate.social import posts
from syndicate.web.app import create_app

STORY = {
    "url": "https://news.example/2026/05/harbour-reopens",
    "title": "Harbour reopens after repairs",
    "guid": "https://news.example/?p=101",
    "content_html": (
        '<p>The harbour reopened on Monday after a week of repairs. Ferries run to the old timetable. '
        'Crews worked overnight.</p><script>alert("pwned")</script>'
        '<p><img src="/img/harbour.jpg" onerror="alert(1)"> Boats were back by noon.</p>'
        '<p>Source link</p>'
    ),
    "author": "Ana Reporter",
    "categories": ["Local", " "],
    "published_at": "2026-05-01T07:00:00+02:00",
}
LEAD = "The harbour reopened on Monday after a week of repairs. Ferries run to the old timetable."


# ── helpers ──────────────────────────────────────────────────────────────────


def new_token(svc, name: str = "wordpress") -> str:
    with transaction(svc.Session) as session:
        return api_tokens.create_token(session, name, scopes=["articles:push"])[1]


@pytest.fixture
def token(svc) -> str:
    return new_token(svc)


@pytest.fixture
def client(svc):
    with TestClient(create_app()) as client:
        yield client


def send(client, token: str | None, story: dict | None = None, **kwargs):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    if story is not None:
        kwargs["json"] = story
    return client.post("/api/articles", headers=headers, **kwargs)


def stored(svc) -> list[Article]:
    with transaction(svc.Session) as session:
        return list(session.scalars(select(Article).order_by(Article.id)))


def post_count(svc) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(func.count()).select_from(Post))


def plan_posts(svc) -> list[int]:
    with transaction(svc.Session) as session:
        return posts.plan(session, svc.settings)


@pytest.fixture
def syndicate(svc):
    """Run `syndicate …` in this process against the test's database."""
    env = {"SYNDICATE_DATA_DIR": str(svc.settings.data_dir), "SYNDICATE_DATABASE_URL": svc.settings.database_url,
           "SYNDICATE_SECRET_KEY": svc.settings.secret_key, "SYNDICATE_BASE_URL": svc.settings.base_url}

    def run(*args: str):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return run


# ── tokens ───────────────────────────────────────────────────────────────────


def test_it_stores_only_the_hash_of_a_new_token(svc):
    with transaction(svc.Session) as session:
        row, secret = api_tokens.create_token(session, "wordpress", scopes=["articles:push"])

    assert secret.startswith("syn_") and len(secret) > 40
    with transaction(svc.Session) as session:
        saved = session.get(ApiToken, row.id)
        assert saved.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in {saved.name, saved.token_hash}
        assert saved.last_used_at is None and saved.revoked_at is None


def test_it_gives_each_token_a_different_secret(svc):
    assert new_token(svc, "one") != new_token(svc, "two")


def test_it_authenticates_a_token_and_records_when_it_was_used(svc, token):
    when = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    with transaction(svc.Session) as session:
        assert api_tokens.authenticate(session, token, "articles:push", now=when).name == "wordpress"
    with transaction(svc.Session) as session:
        assert session.scalar(select(ApiToken.last_used_at)) == when


@pytest.mark.parametrize("given", [None, "", "syn_not-a-token-we-made", "a-token-of-another-service"])
def test_it_refuses_a_missing_or_unknown_token_and_says_how_to_get_one(svc, token, given):
    with transaction(svc.Session) as session, pytest.raises(NotAuthenticated, match="syndicate token create"):
        api_tokens.authenticate(session, given, "articles:push")


def test_it_refuses_a_revoked_token(svc, token):
    with transaction(svc.Session) as session:
        api_tokens.revoke(session, "wordpress")
    with transaction(svc.Session) as session, pytest.raises(NotAuthenticated, match="revoked"):
        api_tokens.authenticate(session, token, "articles:push")


def test_it_refuses_a_second_token_with_a_name_in_use_or_revoked(svc, token):
    with transaction(svc.Session) as session, pytest.raises(InvalidInput, match="wordpress-2"):
        api_tokens.create_token(session, "wordpress", scopes=["articles:push"])
    with transaction(svc.Session) as session:
        api_tokens.revoke(session, "wordpress")
    with transaction(svc.Session) as session, pytest.raises(InvalidInput, match="revoked"):
        api_tokens.create_token(session, "wordpress", scopes=["articles:push"])


def test_it_says_which_tokens_exist_when_revoking_an_unknown_one(svc):
    with transaction(svc.Session) as session, pytest.raises(NotFound, match="syndicate token list"):
        api_tokens.revoke(session, "nobody")


# ── pushing a story ──────────────────────────────────────────────────────────


def test_it_stores_a_pushed_story_sanitised_with_a_clean_lead(svc, client, token):
    response = send(client, token, STORY)

    assert response.status_code == 201, response.text
    [article] = stored(svc)
    assert response.json() == {"id": article.id, "status": "created"}
    assert article.feed_id is None  # pushed, not polled
    assert "<script" not in article.content_html and "onerror" not in article.content_html
    assert 'src="https://news.example/img/harbour.jpg"' in article.content_html  # absolute against the story
    assert article.lead == LEAD
    assert article.title == "Harbour reopens after repairs"
    assert article.identity == "push|" + STORY["guid"] and article.url == STORY["url"]
    assert article.author == "Ana Reporter" and article.categories == ["Local"]
    assert article.published_at == datetime(2026, 5, 1, 5, 0, tzinfo=UTC)
    assert article.image_url == "https://news.example/img/harbour.jpg"


def test_it_sets_no_cookie_and_needs_no_csrf_token(client, token):
    response = send(client, token, STORY)

    assert response.status_code == 201
    assert "set-cookie" not in response.headers and not client.cookies


def test_it_answers_a_repeated_push_as_unchanged_and_keeps_one_article(svc, client, token):
    first = send(client, token, STORY)
    again = send(client, token, STORY)

    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "status": "unchanged"}
    assert len(stored(svc)) == 1


def test_it_takes_an_edit_as_an_update_and_plans_no_second_post(svc, client, token):
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
    first = send(client, token, STORY)
    assert post_count(svc) == 1  # the push queued the social tick at once (run inline here)

    edited = send(client, token, {**STORY, "title": "Harbour reopens after two weeks of repairs"})

    assert edited.status_code == 200
    assert edited.json() == {"id": first.json()["id"], "status": "updated"}
    [article] = stored(svc)
    assert article.title == "Harbour reopens after two weeks of repairs" and article.updated_at is not None
    assert plan_posts(svc) == [] and post_count(svc) == 1


def test_it_recognises_the_story_by_its_canonical_address_when_no_guid_is_sent(svc, client, token):
    first = send(client, token, STORY)
    without_guid = {k: v for k, v in STORY.items() if k != "guid"}
    tracked = {**without_guid, "url": "HTTPS://News.Example/2026/05/harbour-reopens?utm_source=x&utm_medium=mail#top"}

    response = send(client, token, tracked)

    assert response.status_code == 200
    assert response.json() == {"id": first.json()["id"], "status": "unchanged"}
    assert len(stored(svc)) == 1


def test_it_identifies_a_story_without_guid_by_its_canonical_address(svc, client, token):
    story = {"url": "https://news.example/2026/05/tide?utm_campaign=x#comments", "title": "Tide tables"}

    assert send(client, token, story).status_code == 201

    [article] = stored(svc)
    assert article.identity == article.url == "https://news.example/2026/05/tide"


def test_it_hands_a_pushed_story_to_posts_and_editions(svc, client, token):
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com", max_age_hours=0)
    article_id = send(client, token, STORY).json()["id"]

    with transaction(svc.Session) as session:
        # The push queued the social tick after its commit (inline here): the teaser is planned already.
        assert session.scalars(select(Post.article_id)).all() == [article_id]
        newsletter = lists.get_newsletter(session, "daily")
        assert [a.id for a in editions.new_articles(session, newsletter)] == [article_id]


def test_it_normalises_a_pushed_story_exactly_as_the_same_feed_item():
    rss = f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>News</title><link>https://news.example/</link><description>d</description>
<item><title>{STORY["title"]}</title><link>{STORY["url"]}?utm_source=rss</link>
<guid isPermaLink="false">{STORY["guid"]}</guid>
<content:encoded><![CDATA[{STORY["content_html"]}]]></content:encoded></item>
</channel></rss>""".encode()
    [polled] = documents.parse(rss, "https://news.example/feed/")

    pushed = push.entry_from_push(push.parse(json.dumps(STORY).encode()))

    for name in ("identity", "url", "title", "content_html", "lead", "content_hash", "image_url"):
        assert getattr(pushed, name) == getattr(polled, name), name


def test_it_makes_a_title_header_safe(svc, client, token):
    story = {**STORY, "title": "Harbour <b>reopens</b>\r\nBcc: everyone@example.com"}

    assert send(client, token, story).status_code == 201

    [article] = stored(svc)
    assert article.title == "Harbour reopens Bcc: everyone@example.com"


def test_it_stores_a_push_once_on_sqlite_and_postgresql(database_url, make_settings):
    svc = configured(make_settings(database_url=database_url))
    token = new_token(svc)
    with TestClient(create_app()) as client:
        answers = [send(client, token, STORY), send(client, token, STORY),
                   send(client, token, {**STORY, "title": "Harbour reopens, ferries late"})]

    assert [(a.status_code, a.json()["status"]) for a in answers] == [
        (201, "created"), (200, "unchanged"), (200, "updated")]
    [article] = stored(svc)
    assert article.published_at == datetime(2026, 5, 1, 5, 0, tzinfo=UTC)


# ── refusals: nothing stored, and the answer says what to do ─────────────────


@pytest.fixture
def revoked_token(svc, token) -> str:
    with transaction(svc.Session) as session:
        api_tokens.revoke(session, "wordpress")
    return token


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer syn_this-token-was-never-made",
    "Bearer not-even-ours",
    "Basic d29yZHByZXNzOnNlY3JldA==",
    "revoked",
])
def test_it_refuses_a_push_without_a_valid_token(svc, client, revoked_token, authorization):
    if authorization == "revoked":
        authorization = f"Bearer {revoked_token}"
    headers = {"Authorization": authorization} if authorization else {}

    response = client.post("/api/articles", json=STORY, headers=headers)

    assert response.status_code == 401
    assert "syndicate token create" in response.json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored(svc) == []


def test_it_says_a_revoked_token_was_revoked(client, revoked_token):
    response = send(client, revoked_token, STORY)

    assert response.status_code == 401
    assert "revoked" in response.json()["error"]


def test_it_tells_a_caller_without_a_token_nothing_about_its_body(client):
    response = client.post("/api/articles", content=b"{not json")

    assert response.status_code == 401


@pytest.mark.parametrize("body, says", [
    (b'{"url": "https://news.example/a", "title": ', "not valid JSON"),
    (b'["https://news.example/a", "A title"]', "must be a JSON object"),
    (json.dumps({k: v for k, v in STORY.items() if k != "title"}).encode(), "title: is required"),
    (json.dumps({**STORY, "title": "  <b> </b> "}).encode(), "title: the title is empty"),
    (json.dumps({**STORY, "url": "ftp://news.example/a"}).encode(), "url: 'ftp://news.example/a' is not a web"),
    (json.dumps({**STORY, "url": "/2026/05/relative"}).encode(), "give a full http:// or https:// URL"),
    (json.dumps({**STORY, "image_url": "javascript:alert(1)"}).encode(), "image_url:"),
    (json.dumps({**STORY, "published_at": "2026-05-01T07:00:00"}).encode(), "published_at: the time has no time zone"),
    (json.dumps({**STORY, "published_at": "yesterday"}).encode(), "published_at:"),
    (json.dumps({**STORY, "categories": "Local"}).encode(), "categories:"),
    (json.dumps({**STORY, "content": "<p>misspelt</p>"}).encode(), "content: is not a field of a story"),
])
def test_it_refuses_a_story_it_cannot_store_and_says_what_to_fix(svc, client, token, body, says):
    response = send(client, token, content=body)

    assert response.status_code == 422
    assert says in response.json()["error"]
    assert stored(svc) == []


def test_it_names_every_field_to_fix_at_once(client, token):
    response = send(client, token, {"url": "ftp://x/", "published_at": "2026-05-01T07:00:00"})

    error = response.json()["error"]
    assert "url:" in error and "title: is required" in error and "published_at:" in error


def test_it_refuses_a_body_over_one_megabyte(svc, client, token):
    story = {**STORY, "content_html": "<p>" + "x" * push.MAX_BYTES + "</p>"}

    response = send(client, token, story)

    assert response.status_code == 413
    assert "1 MB" in response.json()["error"]
    assert stored(svc) == []


def test_it_refuses_an_oversized_body_sent_without_a_length(svc, client, token):
    chunks = (b" " * 65536 for _ in range(push.MAX_BYTES // 65536 + 2))  # chunked: no Content-Length

    response = send(client, token, content=chunks)

    assert response.status_code == 413
    assert stored(svc) == []


# ── the operator's commands ──────────────────────────────────────────────────


def test_it_creates_a_token_with_the_cli_that_the_api_accepts(svc, syndicate):
    result = syndicate("token", "create", "wordpress", "--scope", "articles:push")

    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()  # the token alone on stdout, for `TOKEN=$(syndicate token create …)`
    assert secret.startswith("syn_") and "\n" not in secret
    assert "not stored" in result.stderr
    assert "/api/articles" in result.stderr
    with TestClient(create_app()) as client:
        assert send(client, secret, STORY).status_code == 201


def test_it_lists_tokens_without_their_secrets(svc, syndicate):
    secret = syndicate("token", "create", "wordpress", "--scope", "articles:push").stdout.strip()
    with transaction(svc.Session) as session:
        digest = session.scalar(select(ApiToken.token_hash))

    listed = syndicate("token", "list", "--json")
    table = syndicate("token", "list")

    assert listed.exit_code == 0 and table.exit_code == 0
    assert [(row["name"], row["status"]) for row in json.loads(listed.stdout)] == [("wordpress", "active")]
    for output in (listed.output, table.output):
        assert secret not in output and secret.removeprefix("syn_")[:12] not in output and digest not in output


def test_it_revokes_a_token_with_the_cli(svc, syndicate):
    secret = syndicate("token", "create", "wordpress", "--scope", "articles:push").stdout.strip()

    result = syndicate("token", "revoke", "wordpress")

    assert result.exit_code == 0 and "revoked" in result.stdout
    assert json.loads(syndicate("token", "list", "--json").stdout)[0]["status"] == "revoked"
    with TestClient(create_app()) as client:
        assert send(client, secret, STORY).status_code == 401


def test_a_pushed_story_may_say_what_its_picture_shows(svc, client, token):
    story = {**STORY, "image_url": "https://news.example/img/crane.jpg", "image_alt": " A crane lifts\na hull "}
    assert send(client, token, story).status_code == 201
    [article] = stored(svc)
    assert (article.image_url, article.image_alt) == ("https://news.example/img/crane.jpg", "A crane lifts a hull")

    # The picture in the story (no alt there): the words pushed with it are not its words.
    assert send(client, token, {**STORY, "guid": "2", "url": STORY["url"] + "-2", "image_alt": "Ignored"}).status_code \
        == 201
    assert stored(svc)[1].image_alt is None
