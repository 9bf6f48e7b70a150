"""Feed → article → edition → delivery, and article → post, through a real Celery worker.

A local HTTP server serves the feed, an aiosmtpd server receives the mail, tweepy's
requests to X are answered by `responses`, and the worker consumes from a real
Redis — or from the embedded broker, with no Redis at all.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
from datetime import timedelta

import pytest
import responses
from sqlalchemy import func, select
from starlette.testclient import TestClient
from twitter_text import parse_tweet

from conftest import FIGURES, configured, wait_for
from syndicate import tasks
from syndicate.db import transaction
from syndicate.ingest import feeds
from syndicate.models import Delivery, Edition, Newsletter, Post, Subscription, utcnow
from syndicate.newsletters import lists
from syndicate.social import posts
from syndicate.subscribers import consent

SUBSCRIBERS = 150
X_CREDENTIALS = dict(x_consumer_key="ck", x_consumer_secret="cs", x_access_token="at", x_access_token_secret="ats")


@pytest.fixture(params=["redis", "embedded"])
def broker_url(request, tmp_path):
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


def test_a_published_story_reaches_inboxes_and_x_exactly_once(
    broker_url, make_settings, tmp_path, smtp_server, feed_server, sample_feed, celery_worker_for
):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'e2e.db'}", broker_url=broker_url,
                             smtp_url=smtp_server.url, batch_size=40, **X_CREDENTIALS)
    svc = configured(settings)
    feed_url = feed_server.serve("/feed/", sample_feed)
    with transaction(svc.Session) as session:
        feeds.add_feed(session, feed_url)
        newsletter = lists.add_newsletter(session, max_age_hours=0, slug="morning", name="The Morning Briefing",
                                          from_address="briefing@news.example", cron="0 7 * * *",
                                          timezone="Europe/Berlin")
        for i in range(SUBSCRIBERS):
            name = "Zoë Ødegård" if i % 3 == 0 else f"Reader {i}"
            consent.subscribe(session, f"reader{i}@example.org", [newsletter.id], name=name, confirmed=True)
        consent.subscribe(session, "pending@example.org", [newsletter.id])  # never confirmed: gets nothing
        # Any hour, no gap, no age limit (the sample's stories are years old): one post per tick.
        posts.ensure_default_account(session).settings = dict(window="always", min_gap=0, max_age=0)
        newsletter_id = newsletter.id

    with responses.RequestsMock(assert_all_requests_are_fired=False) as x_api:
        counter = iter(range(1000, 2000))
        x_api.add_callback(
            responses.POST, "https://api.twitter.com/2/tweets",
            callback=lambda request: (201, {}, json.dumps({"data": {"id": str(next(counter)), "text": "t"}})),
            content_type="application/json",
        )
        x_api.add_passthru("http://127.0.0.1")
        celery_worker_for()

        # feed → article → post: the worker polls, stores, plans and publishes
        tasks.poll_feeds.delay()
        wait_for(lambda: count(svc, Post, Post.status == "posted") == 1, what="the first post on X")
        for n in (2, 3, 4):  # the pace: one post per account per tick
            tasks.social_tick.delay()
            wait_for(lambda n=n: count(svc, Post, Post.status == "posted") == n, what=f"{n} posts on X")

        # article → edition → delivery: the beat tick finds the newsletter due
        with transaction(svc.Session) as session:
            session.get(Newsletter, newsletter_id).next_run_at = utcnow() - timedelta(seconds=1)
        started = time.monotonic()
        tasks.tick.delay()
        wait_for(lambda: count(svc, Delivery, Delivery.status == "sent") == SUBSCRIBERS, what="all deliveries")
        elapsed = time.monotonic() - started
        tasks.tick.delay()
        wait_for(lambda: count(svc, Edition, Edition.status == "sent") == 1, what="the edition closed")

        # a second round finds nothing new and sends nothing
        tasks.poll_feeds.delay()
        tasks.social_tick.delay()
        with transaction(svc.Session) as session:
            session.get(Newsletter, newsletter_id).next_run_at = utcnow() - timedelta(seconds=1)
        tasks.tick.delay()
        wait_for(lambda: count(svc, Edition, Edition.status == "skipped") == 1, what="an empty cut")
        time.sleep(1.5)
        x_posts = [json.loads(call.request.body) for call in x_api.calls
                   if call.request.url == "https://api.twitter.com/2/tweets"]

    FIGURES.append(f"end to end ({broker_url.split(':')[0]}): {SUBSCRIBERS} messages delivered to aiosmtpd "
                   f"in {elapsed:.2f} s = {SUBSCRIBERS / elapsed:.0f} msg/s (cut + render + fan-out + send)")

    # Every confirmed subscriber got exactly one copy; the unconfirmed one got none.
    recipients = [r for m in smtp_server.messages for r in m.recipients]
    assert len(recipients) == SUBSCRIBERS
    assert sorted(recipients) == sorted(f"reader{i}@example.org" for i in range(SUBSCRIBERS))

    message = email.message_from_bytes(smtp_server.messages[0].data, policy=email.policy.default)
    assert "Armenia Conducts Joint Military Exercises" in message["Subject"]
    assert message["From"].addresses[0].addr_spec == "briefing@news.example"
    assert message["List-Id"] == "The Morning Briefing <morning.news.example>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(r"<\S+@news\.example>", message["Message-ID"])
    assert message["Date"]
    text, html = [part.get_content_type() for part in message.iter_parts()]
    assert (text, html) == ("text/plain", "text/html")
    body_text = " ".join(message.get_body(("plain",)).get_content().split())
    body_html = message.get_body(("html",)).get_content()
    assert "The drills involve 175 Armenian and 85 U.S. soldiers" in body_text
    assert "Source link" not in body_text and "Leave a Reply" not in body_text
    assert 'style="' in body_html  # premailer inlined the stylesheet
    [unsubscribe_url] = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])  # no inbound path: no mailto
    assert unsubscribe_url.startswith("http://testserver/u/")
    assert unsubscribe_url in body_text and unsubscribe_url in body_html

    # Message-IDs are unique: no two copies of one delivery went out.
    ids = [email.message_from_bytes(m.data, policy=email.policy.default)["Message-ID"] for m in smtp_server.messages]
    assert len(set(ids)) == len(ids)

    # The unsubscribe link works against the web app, by RFC 8058 one-click POST.
    from syndicate.web.app import create_app

    client = TestClient(create_app(), base_url="http://testserver")
    path = unsubscribe_url.removeprefix("http://testserver")
    assert client.get(path).status_code == 200
    response = client.post(path, content=b"List-Unsubscribe=One-Click", follow_redirects=False,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    recipient = message["To"].addresses[0].addr_spec
    with transaction(svc.Session) as session:
        status = session.scalar(select(Subscription.status).join(Subscription.subscriber)
                                .where(Subscription.subscriber.has(email=recipient)))
    assert status == "unsubscribed"

    # X got one post per story, each with its link, within the weighted limit.
    assert len(x_posts) == 4
    assert all(parse_tweet(p["text"]).weightedLength <= 280 and "https://truthusa.example/" in p["text"]
               for p in x_posts)
    assert any(p["text"].startswith("Armenia Conducts Joint Military Exercises") for p in x_posts)


def count(svc, model, condition) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(func.count()).select_from(model).where(condition))
