"""The desk at the HTTP level: sign-in (argon2, limited tries), sessions (cookie flags, expiry), CSRF on every
form, nothing but the public pages without a session, and /metrics for operators."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import select
from starlette.testclient import TestClient

from desk_client import PASSWORD, add_editor, csrf, desk_client, sign_in
from syndicate import tasks
from syndicate.db import transaction
from syndicate.desk import core as desk_core
from syndicate.desk import editors
from syndicate.desk import routes as desk
from syndicate.http import api_tokens
from syndicate.models import Article, Editor, Post, SocialAccount, utcnow
from syndicate.social import accounts, posts
from syndicate.web.app import create_app


@pytest.fixture
def client(svc):
    add_editor(svc)
    return desk_client()


def test_nothing_of_the_desk_opens_without_signing_in(client):
    for path in ("/desk", "/desk/posts/1"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"] == f"/desk/login?next={path}"
    assert client.get("/desk/posts/1/measure?text=x", headers={"Accept": "application/json"}).status_code == 401
    assert client.post("/desk/social/pause", data={"csrf": "x"}).status_code in (303, 403)
    assert client.get("/").status_code == 200  # the public pages stay public
    assert client.get("/healthz").status_code == 200


def test_an_editor_signs_in_with_a_session_cookie_that_scripts_cannot_read(client, svc):
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/desk"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{desk.COOKIE}=") and "httponly" in cookie.lower()
    assert "path=/desk" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # http base URL here; https gets Secure (next test)
    assert "Today" in client.get("/desk").text
    with transaction(svc.Session) as session:
        assert session.scalar(select(Editor.last_sign_in_at).where(Editor.username == "ada")) is not None
        assert session.scalar(select(Editor.password_hash)).startswith("$argon2id$")


def test_the_cookie_is_secure_when_the_site_is_https(make_settings, tmp_path):
    from conftest import configured

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 's.db'}", base_url="https://news.example"))
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
    client = TestClient(create_app(), base_url="https://testserver", follow_redirects=False)
    assert "secure" in sign_in(client).headers["set-cookie"].lower()


def test_a_wrong_password_and_an_unknown_name_get_the_same_answer_and_tries_run_out(client):
    wrong, unknown = sign_in(client, "nope nope nope"), sign_in(client, PASSWORD, username="bob")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong name or password." in wrong.text and "Wrong name or password." in unknown.text
    for _ in range(editors.ATTEMPTS - 1):
        sign_in(client, "nope nope nope")
    refused = sign_in(client)  # even the right password: the name's tries are used up
    assert refused.status_code == 401 and "Too many sign-in attempts" in refused.text


def test_a_form_without_the_csrf_token_changes_nothing(client, svc):
    assert client.post("/desk/login", data={"username": "ada", "password": PASSWORD}).status_code == 403
    sign_in(client)
    assert client.post("/desk/social/pause", data={"reason": "x"}).status_code == 403
    assert client.post("/desk/social/pause", data={"reason": "x", "csrf": "forged"}).status_code == 403
    with transaction(svc.Session) as session:
        assert accounts.social_paused(session) is None
    token = csrf(client, "/desk")
    assert client.post("/desk/social/pause", data={"reason": "election night", "csrf": token}).status_code == 303
    with transaction(svc.Session) as session:
        assert accounts.social_paused(session).reason == "election night"
    assert "All social posting is paused" in client.get("/desk").text


def test_a_session_ends_after_its_lifetime_and_when_the_editor_is_disabled(client, svc, monkeypatch):
    sign_in(client)
    assert client.get("/desk").status_code == 200
    later = time.time() + desk.SESSION_HOURS * 3600 + 1
    monkeypatch.setattr(desk_core.time, "time", lambda: later)
    assert client.get("/desk").status_code == 303
    monkeypatch.undo()
    sign_in(client)
    with transaction(svc.Session) as session:
        session.scalar(select(Editor)).disabled_at = utcnow()
    assert client.get("/desk").status_code == 303


def test_sign_in_never_sends_an_editor_to_another_site(client):
    token = csrf(client)
    response = client.post("/desk/login", data={"username": "ada", "password": PASSWORD, "csrf": token,
                                                "next": "https://evil.example/desk"})
    assert response.headers["location"] == "/desk"


def planned_post(session, svc, now) -> int:
    """One story and an X account that saw it come: the post planned for it."""
    account = accounts.add(session, "k", "x-main", "x", dict(window="always"), None)
    account.created_at = now - timedelta(minutes=1)
    session.add(Article(identity="a", url="https://news.example.com/a/", title="A headline", lead="",
                        content_hash="0" * 64, categories=[], published_at=now, first_seen_at=now))
    [post_id] = posts.plan(session, svc.settings, now)
    return post_id


def test_an_editor_edits_a_teaser_measured_by_its_network(client, svc):
    now = utcnow()
    with transaction(svc.Session) as session:
        post_id = planned_post(session, svc, now)
        link = session.get(Post, post_id).payload["url"]  # with its UTM parameters
    assert link.startswith("https://news.example.com/a/?utm_source=x")
    sign_in(client)
    page = client.get(f"/desk/posts/{post_id}").text
    assert "A headline" in page and "X's count" in page
    measured = client.get(f"/desk/posts/{post_id}/measure", params={"text": f"東京 {link}"}).json()
    assert measured == {"length": 2 * 2 + 1 + 23, "limit": 280, "ok": True, "problem": None}
    token = csrf(client, f"/desk/posts/{post_id}")
    refused = client.post(f"/desk/posts/{post_id}", data={"csrf": token, "action": "save", "text": "no link"})
    assert "link is missing" in refused.text
    saved = client.post(f"/desk/posts/{post_id}",
                        data={"csrf": token, "action": "save", "text": f"Read this: {link}"})
    assert saved.status_code == 303
    with transaction(svc.Session) as session:
        post = session.get(Post, post_id)
        assert (post.text, post.edited) == (f"Read this: {link}", True)
    client.post(f"/desk/posts/{post_id}", data={"csrf": token, "action": "hold"})
    with transaction(svc.Session) as session:
        assert session.get(Post, post_id).status == "held"
        assert session.scalar(select(SocialAccount.status)) == "active"


def test_metrics_answer_an_operator_with_a_token_in_prometheus_format(client, svc):
    assert client.get("/metrics").status_code == 401
    with transaction(svc.Session) as session:
        _, token = api_tokens.create_token(session, "prometheus", scopes=["metrics:read"])
    body = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain; version=0.0.4")
    for family in ("syndicate_queue_depth", "syndicate_deliveries", "syndicate_posts", "syndicate_feeds_failing",
                   "syndicate_social_kill_switch 0"):
        assert family in body.text
    assert b"syndicate_" not in generate_latest(REGISTRY)  # a registry of the scrape's own, not the global one


def test_an_editor_reshares_a_posted_story_and_moves_a_waiting_one_to_the_breaking_lane(client, svc):
    now = utcnow()
    with transaction(svc.Session) as session:
        account = accounts.add(session, "k", "x-main", "x", dict(window="always"), None)
        account.created_at = now - timedelta(minutes=1)
        for key in ("a", "b"):
            session.add(Article(identity=key, url=f"https://news.example.com/{key}/", title=f"Story {key}", lead="",
                                content_hash=key * 64, categories=[], published_at=now, first_seen_at=now))
        first, second = posts.plan(session, svc.settings, now)
        session.get(Post, first).status, session.get(Post, first).posted_at = "posted", now
    sign_in(client)
    token = csrf(client, f"/desk/posts/{first}")
    assert "Re-share" in client.get(f"/desk/posts/{first}").text
    shared = client.post(f"/desk/posts/{first}", data={"csrf": token, "action": "reshare", "at": ""})
    assert shared.status_code == 303 and shared.headers["location"] != f"/desk/posts/{first}"
    assert client.post(f"/desk/posts/{second}", data={"csrf": token, "action": "breaking"}).status_code == 303
    with transaction(svc.Session) as session:
        again = session.scalar(select(Post).where(Post.share == 1))
        assert (again.article_id, again.status, again.text) == (session.get(Post, first).article_id, "pending",
                                                                session.get(Post, first).text)
        assert session.get(Post, second).lane == "breaking"


def test_a_story_reshared_on_the_desk_goes_to_bluesky_with_its_link_card(client, svc, feed_server):
    """Issue 19: a re-share was a new post nobody checked the card of, so Bluesky got no embed. The next
    tick checks it before it dispatches it."""
    page = feed_server.serve("/story/", b'<html><head><meta property="og:title" content="Harbour reopens">'
                             b'<meta property="og:description" content="Ferries at dawn."></head></html>',
                             **{"Content-Type": "text/html"})
    now = utcnow()
    with transaction(svc.Session) as session:
        account = accounts.add(session, "k", "bsky", "bluesky",
                               dict(window="always", min_gap=0, max_age=0, dry_run=True, handle="news.example"), None)
        account.created_at = now - timedelta(minutes=1)
        session.add(Article(identity="h", url=page, title="Harbour reopens", lead="", content_hash="h" * 64,
                            categories=[], published_at=now, first_seen_at=now))
        [first] = posts.plan(session, svc.settings, now)
        session.get(Post, first).status, session.get(Post, first).posted_at = "posted", now
    sign_in(client)
    token = csrf(client, f"/desk/posts/{first}")
    assert client.post(f"/desk/posts/{first}", data={"csrf": token, "action": "reshare", "at": ""}).status_code == 303

    tasks.social_tick()  # the beat's tick; its publishing task runs inline here

    with transaction(svc.Session) as session:
        again = session.scalar(select(Post).where(Post.share == 1))
        assert again.status == "posted" and again.payload["card"]["title"] == "Harbour reopens"
        written = json.loads((svc.settings.outbox / "posts" / f"syndicate-post-{again.id}.json").read_text())
    embed = written["request"]["json"]["record"]["embed"]
    assert (embed["$type"], embed["external"]["title"]) == ("app.bsky.embed.external", "Harbour reopens")


def test_a_time_typed_on_the_desk_is_read_in_the_zone_and_a_skipped_hour_is_refused():
    from datetime import UTC, datetime

    from syndicate.desk.core import local_time
    from syndicate.errors import InvalidInput

    assert local_time("2026-07-01T07:30", "Europe/Berlin") == datetime(2026, 7, 1, 5, 30, tzinfo=UTC)
    assert local_time("2026-01-10T07:30", "Europe/Berlin") == datetime(2026, 1, 10, 6, 30, tzinfo=UTC)
    assert local_time("2026-10-25T02:30", "Europe/Berlin") == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first
    assert local_time("2026-07-01T07:30+00:00", "Europe/Berlin") == datetime(2026, 7, 1, 7, 30, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="doesn't exist in Europe/Berlin"):
        local_time("2026-03-29T02:30", "Europe/Berlin")
    with pytest.raises(InvalidInput, match="not a date and time"):
        local_time("tomorrow", "Europe/Berlin")


def test_an_editor_turns_an_accounts_pictures_off_and_on_from_today(client, svc):
    with transaction(svc.Session) as session:
        accounts.add(session, "k", "x-main", "x", dict(window="always"), None)
    sign_in(client)
    assert 'action="/desk/accounts/x-main/images-off"' in client.get("/desk").text
    token = csrf(client, "/desk")

    assert client.post("/desk/accounts/x-main/images-off", data={"csrf": token}).status_code == 303
    with transaction(svc.Session) as session:
        assert accounts.settings_of(accounts.by_name(session, "x-main")).images is False
    assert 'action="/desk/accounts/x-main/images-on"' in client.get("/desk").text
    assert client.post("/desk/accounts/x-main/images-off", data={"csrf": "forged"}).status_code == 403

    client.post("/desk/accounts/x-main/images-on", data={"csrf": token})
    with transaction(svc.Session) as session:
        assert accounts.settings_of(accounts.by_name(session, "x-main")).images is True


def test_a_teaser_page_shows_its_picture_and_why_it_went_without(client, svc):
    now = utcnow()
    with transaction(svc.Session) as session:
        post_id = planned_post(session, svc, now)
        post = session.get(Post, post_id)
        post.payload = {**post.payload, "image": {"url": "https://cdn.example/a.jpg", "alt": "A <b>quay</b>",
                                                  "type": "image/jpeg", "bytes": 812_345, "width": 2000,
                                                  "height": 1333, "sha256": "0" * 64, "resized": None},
                        "image_error": "X refused the picture (503: over capacity); the post went without it"}
    sign_in(client)
    page = client.get(f"/desk/posts/{post_id}").text
    assert "image/jpeg, 2000×1333, 812,345 bytes" in page and "A &lt;b&gt;quay&lt;/b&gt;" in page
    assert "X refused the picture (503: over capacity)" in page


def test_a_teasers_time_is_typed_in_the_editors_zone_like_every_other_time_on_the_desk(client, svc):
    """The account posts on UTC; the editor works in Tokyo: 09:00 typed is 09:00 in Tokyo, and the field
    says which zone it reads."""
    now = utcnow()
    with transaction(svc.Session) as session:
        post_id = planned_post(session, svc, now)
    sign_in(client)
    token = csrf(client, "/desk/account")
    client.post("/desk/account/timezone", data={"csrf": token, "timezone": "Asia/Tokyo"})
    page = client.get(f"/desk/posts/{post_id}").text
    assert "Not before (Asia/Tokyo)" in page
    assert client.post(f"/desk/posts/{post_id}", data={"csrf": token, "action": "schedule",
                                                       "at": "2030-01-02T09:00"}).status_code == 303
    with transaction(svc.Session) as session:
        assert session.get(Post, post_id).scheduled_at == datetime(2030, 1, 2, 0, 0, tzinfo=UTC)
