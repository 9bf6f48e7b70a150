"""article → post: the teaser, the ledger (plan, due, publish) and tweepy talking HTTP to `responses`."""

from __future__ import annotations

import json
import time
import types
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from conftest import configured
from syndicate import feeds, posts
from syndicate.db import transaction
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.templating import render

FEED_URL = "https://truthusa.example/feed/"
TWEETS = "https://api.twitter.com/2/tweets"
X_CREDENTIALS = dict(x_consumer_key="ck", x_consumer_secret="cs", x_access_token="at", x_access_token_secret="ats")
SEED_TITLE = "Armenia Conducts Joint Military Exercises With US, Straining Relations With Regional Partner Russia"
SEED_URL = "https://truthusa.example/armenia-conducts-joint-military-exercises-with-us/"
DUPLICATE = {"detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403,
             "title": "Forbidden", "type": "about:blank"}


# ── helpers ──────────────────────────────────────────────────────────────────


@pytest.fixture
def live(make_settings, tmp_path):
    """Services with X credentials set: the real tweepy client, talking to `responses`."""
    return configured(make_settings(database_url=f"sqlite:///{tmp_path / 'live.db'}", **X_CREDENTIALS), eager=True)


def plan_posts(svc, sample_feed) -> tuple[SocialAccount, list[int]]:
    """The default account, then the sample feed's articles, planned and leased: the post ids due now."""
    with transaction(svc.Session) as session:
        account = posts.ensure_default_account(session)
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        posts.plan(session, svc.settings)
        due = posts.due(session, utcnow())
    return account, sorted(due)


def reload(svc, post_id: int) -> Post:
    with transaction(svc.Session) as session:
        return session.get(Post, post_id)


def is_due(svc, post_id: int, now: datetime) -> bool:
    with transaction(svc.Session) as session:
        return post_id in posts.due(session, now)


def publish(svc, account, post_id: int, token: str = "t1") -> Post:
    return posts.publish(svc.Session, svc.settings, svc.social_client(account), post_id, token=token)


# ── the teaser ───────────────────────────────────────────────────────────────


def test_it_teases_the_seed_article_with_its_full_headline_and_link(svc, sample_feed):
    with transaction(svc.Session) as session:
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        article = session.scalar(select(Article).where(Article.url == SEED_URL))
        teaser = posts.compose_teaser(article)

    assert article.title == SEED_TITLE
    assert SEED_TITLE in teaser
    assert SEED_URL in teaser
    assert posts.x_length(teaser) <= posts.X_LIMIT


def test_it_keeps_every_sample_headline_whole_and_within_the_limit(svc, sample_feed):
    with transaction(svc.Session) as session:
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        articles = session.scalars(select(Article)).all()
        teasers = [(a, posts.compose_teaser(a)) for a in articles]

    assert len(teasers) == 4
    for article, teaser in teasers:
        assert article.title in teaser and article.url in teaser
        assert posts.x_length(teaser) <= posts.X_LIMIT


def test_it_shortens_a_long_headline_at_a_word_with_an_ellipsis():
    title = " ".join(["Parliament"] * 40)  # 439 characters
    teaser = posts.compose_teaser(types.SimpleNamespace(title=title, lead="A lead.", url=SEED_URL))

    headline = teaser.split("\n")[0]
    assert headline.endswith("…")
    assert headline[:-1].split() == title.split()[: len(headline[:-1].split())]
    assert teaser.endswith(SEED_URL)
    assert posts.x_length(teaser) <= posts.X_LIMIT


SAMPLES = [
    "東京で大雨", "北京市", "서울 날씨", "مرحبا بالعالم", "שלום עולם", "👩‍👩‍👧‍👦", "🇺🇦", "👍🏽", "e\u0301", "\u200d",
    "\u202e", "—", "-", ",", "…", "example.com", "@user", "#tag", "a" * 300,
    "Donaudampfschifffahrtsgesellschaftskapitän" * 4, "東京で大雨" * 30, "👩‍👩‍👧‍👦" * 50,
]
WORDS = st.one_of(st.text(min_size=1, max_size=30), st.sampled_from(SAMPLES))
TITLES = st.one_of(
    st.text(max_size=400),
    st.lists(WORDS, max_size=50).map(" ".join),
    st.tuples(st.sampled_from(SAMPLES), st.integers(1, 40)).map(lambda p: " ".join([p[0]] * p[1])),
).map(lambda title: title[:1000])  # feeds.store keeps at most 1000 characters of a title
URLS = st.sampled_from([SEED_URL, "https://example.com/2024/05/story?id=7&page=2",
                        "https://news.example.org/" + "very-long-slug-" * 8])


def must_shorten(title: str, url: str) -> bool:
    """Whether the headline alone, without a lead, is over the limit (as compose_teaser sees it)."""
    return posts.x_length(render("social/x.txt", title=title, lead="", url=url).strip()) > posts.X_LIMIT


@settings(max_examples=200, deadline=None)
@given(title=TITLES, lead=st.one_of(st.text(max_size=600), st.sampled_from(SAMPLES)), url=URLS)
def test_it_always_fits_a_teaser_in_the_weighted_limit_with_the_link_intact(title, lead, url):
    teaser = posts.compose_teaser(types.SimpleNamespace(title=title, lead=lead, url=url))

    assert teaser.strip()
    assert posts.x_length(teaser) <= posts.X_LIMIT
    assert url in teaser
    if must_shorten(title, url) and teaser != url:  # the link alone when not even one word fits
        headline = teaser.split("\n")[0]
        assert headline.endswith("…")
        kept, words = headline[:-1].split(), title.split()
        # Cut between words: every kept word is the title's, the last one at most loses trailing punctuation.
        if kept:
            assert kept[:-1] == words[: len(kept) - 1]
            assert words[len(kept) - 1].startswith(kept[-1])


# ── the ledger: plan and due ─────────────────────────────────────────────────


def test_it_plans_one_post_per_article_and_account_and_never_twice(svc, sample_feed):
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        session.add(SocialAccount(name="x-sports", network="x", created_at=utcnow()))
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        first = posts.plan(session, svc.settings)
        second = posts.plan(session, svc.settings)
        pairs = session.execute(select(Post.article_id, Post.account_id)).all()

    assert len(first) == 8  # 4 articles × 2 accounts
    assert len(set(pairs)) == 8
    assert second == []


def test_it_does_not_plan_an_article_seen_before_the_account_was_connected(svc, sample_feed):
    with transaction(svc.Session) as session:
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed,
                     now=utcnow() - timedelta(hours=1))
        posts.ensure_default_account(session)
        planned = posts.plan(session, svc.settings)
        count = session.scalar(select(func.count()).select_from(Post))

    assert planned == []
    assert count == 0


def test_it_leases_due_posts_so_a_second_tick_does_not_queue_them_again(svc, sample_feed):
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        posts.plan(session, svc.settings, now=now)
        first = posts.due(session, now)
        again = posts.due(session, now + timedelta(seconds=1))
        after_lease = posts.due(session, now + posts.REQUEUE_AFTER + timedelta(seconds=1))

    assert len(first) == 4
    assert again == []
    assert sorted(after_lease) == sorted(first)  # a task lost in the queue is not lost for good


def test_it_returns_a_post_held_by_a_dead_worker_after_the_claim_goes_stale(svc, sample_feed):
    account, due = plan_posts(svc, sample_feed)
    with transaction(svc.Session) as session:
        post = session.get(Post, due[0])
        post.status, post.claimed_by, post.claimed_at = "sending", "dead-worker", utcnow()
    later = utcnow() + posts.STALE_CLAIM + timedelta(seconds=1)

    assert not is_due(svc, due[0], utcnow() + timedelta(minutes=1))
    assert is_due(svc, due[0], later)


# ── publishing for real: tweepy → responses ──────────────────────────────────


def test_it_posts_the_teaser_to_x_and_records_where_it_landed(live, sample_feed):
    account, due = plan_posts(live, sample_feed)
    text = reload(live, due[0]).text

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": text}})
        post = publish(live, account, due[0])
        request = rsps.calls[0].request

    assert post.status == "posted"
    assert post.dry_run is False
    assert post.remote_id == "1234"
    assert "1234" in post.remote_url
    assert json.loads(request.body) == {"text": text}
    authorization = request.headers["Authorization"]
    authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
    assert authorization.startswith("OAuth ")
    for part in ('oauth_consumer_key="ck"', 'oauth_token="at"', 'oauth_signature_method="HMAC-SHA1"',
                 "oauth_signature="):
        assert part in authorization
    stored = reload(live, due[0])
    assert (stored.status, stored.remote_id, stored.attempts, stored.claimed_by) == ("posted", "1234", 1, None)


def test_it_never_posts_a_published_post_again_even_for_a_new_task(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "x"}})
        publish(live, account, due[0], token="t1")
        publish(live, account, due[0], token="t1")
        again = publish(live, account, due[0], token="t2")
        assert len(rsps.calls) == 1

    assert again.status == "posted" and again.remote_id == "1234"
    assert not is_due(live, due[0], utcnow() + timedelta(days=1))


def test_it_fails_a_duplicate_for_good_and_never_retries_it(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=403, json=DUPLICATE)
        post = publish(live, account, due[0])
        again = publish(live, account, due[0], token="t2")
        assert len(rsps.calls) == 1

    assert post.status == again.status == "failed"
    assert "duplicate" in post.error.lower()
    assert post.remote_id is None
    assert not is_due(live, due[0], utcnow() + timedelta(days=30))


def test_it_puts_a_rate_limited_post_back_for_later_with_the_error(live, sample_feed):
    account, due = plan_posts(live, sample_feed)
    before = utcnow()

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=429, json={"title": "Too Many Requests", "detail": "Too Many Requests"},
                 headers={"x-rate-limit-reset": str(int(time.time()) + 900)})
        post = publish(live, account, due[0])

    assert post.status == "pending"
    assert post.next_attempt_at > before
    assert "rate limit" in post.error.lower()
    assert post.claimed_by is None
    assert not is_due(live, due[0], utcnow())
    assert is_due(live, due[0], utcnow() + timedelta(hours=2))


def test_it_waits_for_the_rate_limit_reset_x_announced(live, sample_feed):
    account, due = plan_posts(live, sample_feed)
    reset = int(time.time()) + 3600

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=429, json={"title": "Too Many Requests", "detail": "Too Many Requests"},
                 headers={"x-rate-limit-reset": str(reset)})
        post = publish(live, account, due[0])

    assert post.status == "pending"
    assert post.next_attempt_at >= datetime.fromtimestamp(reset, UTC)


def test_it_retries_after_an_x_server_error(live, sample_feed):
    account, due = plan_posts(live, sample_feed)
    before = utcnow()

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=503, json={"title": "Service Unavailable"})
        post = publish(live, account, due[0])

    assert post.status == "pending"
    assert post.next_attempt_at > before
    assert post.error
    assert post.attempts == 1
    assert is_due(live, due[0], utcnow() + timedelta(hours=1))


def test_it_retries_when_x_cannot_be_reached(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, body=requests.ConnectionError("connection refused"))
        post = publish(live, account, due[0])

    assert post.status == "pending"
    assert "cannot reach X" in post.error
    assert is_due(live, due[0], utcnow() + timedelta(hours=1))


def test_it_fails_on_bad_credentials_and_says_which_settings_to_check(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=401,
                 json={"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})
        post = publish(live, account, due[0])

    assert post.status == "failed"
    assert "SYNDICATE_X_" in post.error
    assert not is_due(live, due[0], utcnow() + timedelta(days=30))


# ── dry-run: no credentials ──────────────────────────────────────────────────


def test_it_writes_the_exact_request_to_the_outbox_without_credentials(svc, sample_feed):
    account, due = plan_posts(svc, sample_feed)
    text = reload(svc, due[0]).text

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        post = publish(svc, account, due[0])
        assert len(rsps.calls) == 0

    files = list((svc.settings.outbox / "posts").glob("*.json"))
    assert len(files) == 1
    payload = json.loads(files[0].read_text(encoding="utf-8"))
    assert payload["request"] == {"method": "POST", "url": TWEETS, "json": {"text": text}}
    assert post.status == "posted"
    assert post.dry_run is True
    assert reload(svc, due[0]).dry_run is True
