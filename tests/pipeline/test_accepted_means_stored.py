"""Accepted means stored: with the broker away, a sign-up and a pushed story are stored and answered as
such, and the beat's ticks hand their work out later; with the database away, nothing is stored and the
answer is 503 with Retry-After, never a bare 500.

Through the real entry point: the web app on a real port (uvicorn), a reader's form and a CMS's push.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import create_engine, select

from conftest import configured, free_port, hidden_fields, wait_for
from syndicate.db import transaction
from syndicate.http import api_tokens
from syndicate.ledger import Leases
from syndicate.models import Article, ConfirmationMail, Subscriber, utcnow
from syndicate.newsletters import lists
from syndicate.social import posts
from syndicate.subscribers import consent

STORY = {"url": "https://news.example/2026/12/harbour", "title": "The harbour reopens",
         "content_html": "<p>The harbour reopened on Monday after a week of repairs.</p>"}


@pytest.fixture
def newsroom(make_settings, tmp_path, smtp_server):
    """Services whose broker is a Redis port nobody listens on, and the web app serving them."""
    import uvicorn

    from syndicate.web.app import create_app

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", smtp_url=smtp_server.url,
                                   broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
        token = api_tokens.create_token(session, "cms", scopes=["articles:push"])[1]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield svc, client, token
    server.should_exit = True
    thread.join(10)


def sign_up(client: httpx.Client, address: str, fields: dict | None = None) -> httpx.Response:
    """The subscribe form as a browser sends it, from our own page (its Origin is the site's address)."""
    fields = fields if fields is not None else hidden_fields(client.get("/").text)
    return client.post("/subscribe", data={**fields, "email": address, "newsletter": "daily"},
                       headers={"Origin": "http://testserver"})


def push(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/api/articles", json=STORY, headers={"Authorization": f"Bearer {token}"})


def test_with_the_broker_away_a_sign_up_is_stored_answered_and_its_mail_handed_out_by_a_later_tick(newsroom):
    svc, client, _ = newsroom
    answer = sign_up(client, "ana@example.org")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    with transaction(svc.Session) as session:
        reader = session.scalar(select(Subscriber).where(Subscriber.email == "ana@example.org"))
        mail = session.scalar(select(ConfirmationMail).where(ConfirmationMail.subscriber_id == reader.id))
        assert reader.status == "pending" and mail.status == "pending" and mail.attempts == 0
        # The tick (once the broker is back) finds the mail no task sent, and hands it out.
        later = utcnow() + Leases().requeue + timedelta(seconds=1)
        assert consent.lost_confirmations(session, svc.settings, later) == [reader.id]


def test_with_the_broker_away_a_pushed_story_is_stored_and_the_next_social_tick_plans_its_posts(newsroom):
    svc, client, token = newsroom
    answer = push(client, token)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "created"
    with transaction(svc.Session) as session:
        assert session.get(Article, answer.json()["id"]).url == STORY["url"]
        posts.plan(session, svc.settings)  # what the next social tick does: no error, the story is there for it
    assert push(client, token).json() == {"id": answer.json()["id"], "status": "unchanged"}


@pytest.mark.parametrize("what", ["a reader's sign-up", "a CMS's push"])
def test_with_the_database_away_nothing_is_stored_and_the_answer_says_when_to_try_again(newsroom, what):
    svc, client, token = newsroom
    fields = hidden_fields(client.get("/").text)  # the form was open before the database went away
    nowhere = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone", pool_pre_ping=False)
    svc.Session.configure(bind=nowhere)
    try:
        if what == "a CMS's push":
            answer = push(client, token)
            assert answer.status_code == 503
            assert "nothing was stored" in answer.json()["error"]
        else:
            answer = sign_up(client, "ben@example.org", fields)
            assert answer.status_code == 503
            assert "nothing was stored" in answer.text and "try again" in answer.text
        assert int(answer.headers["Retry-After"]) > 0
    finally:
        svc.Session.configure(bind=svc.engine)
        nowhere.dispose()
