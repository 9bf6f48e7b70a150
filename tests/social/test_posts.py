"""article → post: the ledger (plan, dispatch, publish) and tweepy talking HTTP to `responses`."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from atproto_client.models.string_formats import TID_RE
from sqlalchemy import func, select
from twitter_text import parse_tweet

from conftest import configured
from syndicate import ledger
from syndicate.db import transaction
from syndicate.errors import TransportError
from syndicate.ingest import feeds
from syndicate.ledger import Leases
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.social import accounts, checks, pace, posts
from syndicate.social.clients.base import Published, tid

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
    """The default account, then the sample feed's articles, planned: the ids of the pending posts."""
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        account = session.scalar(select(SocialAccount))
        # Any hour, no gap, no age limit: the sample's stories are years old, and pacing is tested elsewhere.
        account.settings = dict(window="always", min_gap=0, max_age=0)
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        planned = posts.plan(session, svc.settings)
    return account, sorted(planned)


def reload(svc, post_id: int) -> Post:
    with transaction(svc.Session) as session:
        post = session.get(Post, post_id)
        _ = post.account.status, post.account.parked_until, post.account.paused_reason
        return post


def publish(svc, account, post_id: int, token: str = "t1") -> Post:
    with transaction(svc.Session) as session:
        client = svc.social_client(session.get(SocialAccount, account.id))
    return posts.publish(svc.Session, svc.settings, client, post_id, token=token)


def dispatched(svc, now: datetime) -> list[int]:
    with transaction(svc.Session) as session:
        return pace.dispatch(session, svc.settings, now)


# ── the teaser, as planned ───────────────────────────────────────────────────


def test_it_teases_the_seed_article_with_its_full_headline_and_link(svc, sample_feed):
    with transaction(svc.Session) as session:
        account = posts.ensure_default_account(session)
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        article = session.scalar(select(Article).where(Article.url == SEED_URL))
        teaser = posts.compose(account, article)

    assert SEED_TITLE in teaser.text
    assert SEED_URL + "?utm_source=x" in teaser.text
    assert parse_tweet(teaser.text).weightedLength == teaser.length <= 280


# ── the ledger: plan and dispatch ────────────────────────────────────────────


def test_it_plans_one_post_per_article_and_account_and_never_twice(svc, sample_feed):
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        session.add(SocialAccount(name="x-sports", network="x", settings={}, created_at=utcnow()))
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        first = posts.plan(session, svc.settings)
        second = posts.plan(session, svc.settings)
        pairs = session.execute(select(Post.article_id, Post.account_id)).all()

    assert len(first) == 8  # 4 articles × 2 accounts
    assert len(set(pairs)) == 8
    assert second == []


def test_it_makes_the_default_account_only_when_there_is_none(svc):
    with transaction(svc.Session) as session:
        assert posts.ensure_default_account(session).name == "x"
        assert posts.ensure_default_account(session) is None
        assert session.scalar(select(func.count()).select_from(SocialAccount)) == 1


def test_it_does_not_plan_an_article_seen_before_the_account_was_connected(svc, sample_feed):
    with transaction(svc.Session) as session:
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed,
                     now=utcnow() - timedelta(hours=1))
        posts.ensure_default_account(session)
        planned = posts.plan(session, svc.settings)
        count = session.scalar(select(func.count()).select_from(Post))

    assert planned == []
    assert count == 0


def test_it_leases_a_dispatched_post_so_the_next_tick_does_not_queue_it_again(svc, sample_feed):
    account, planned = plan_posts(svc, sample_feed)
    now = utcnow()

    first = dispatched(svc, now)
    second = dispatched(svc, now + timedelta(seconds=1))
    assert len(first) == len(second) == 1 and first != second  # one per tick, each post once
    later = dispatched(svc, now + Leases().requeue + timedelta(seconds=2))
    assert later and later[0] in first + second  # a task lost in the queue is not lost for good


def test_it_returns_a_post_held_by_a_dead_worker_after_the_claim_goes_stale(svc, sample_feed):
    account, planned = plan_posts(svc, sample_feed)
    with transaction(svc.Session) as session:
        for post in session.scalars(select(Post)):
            post.status = "cancelled"
        post = session.get(Post, planned[0])
        post.status, post.claimed_by, post.claimed_at = "sending", "dead-worker", utcnow()

    assert dispatched(svc, utcnow() + timedelta(minutes=1)) == []
    assert dispatched(svc, utcnow() + Leases().claim + timedelta(seconds=1)) == [planned[0]]


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


def test_rerunning_the_task_for_a_posted_article_makes_zero_requests(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "x"}})
        publish(live, account, due[0], token="t1")
        publish(live, account, due[0], token="t1")
        again = publish(live, account, due[0], token="t2")
        assert len(rsps.calls) == 1

    assert again.status == "posted" and again.remote_id == "1234"


def test_a_duplicate_on_the_first_try_is_done_and_never_retried(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=403, json=DUPLICATE)
        post = publish(live, account, due[0])
        again = publish(live, account, due[0], token="t2")
        assert len(rsps.calls) == 1

    assert post.status == again.status == "skipped"
    assert "duplicate" in post.error.lower()
    assert post.remote_id is None


def test_a_duplicate_after_an_unanswered_try_is_marked_ambiguous(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, body=requests.ReadTimeout("no answer"))
        rsps.add(responses.POST, TWEETS, status=403, json=DUPLICATE)
        first = publish(live, account, due[0])
        assert (first.status, first.uncertain) == ("pending", True)
        second = publish(live, account, due[0], token="t2")

    assert second.status == "ambiguous"
    assert "probably posted" in second.error



def killed_mid_attempt(svc, post_id: int, token: str, at: datetime) -> None:
    """As a worker killed after it sent the post and before it heard back: claimed, and nothing recorded."""
    with transaction(svc.Session) as session:
        assert ledger.claim(session, Post, Post.id == post_id, token, at) == 1


@pytest.mark.parametrize("comes_back", ["the same task, delivered again", "revived by the tick"])
def test_a_duplicate_after_a_worker_died_mid_attempt_is_marked_ambiguous_not_skipped(live, sample_feed,
                                                                                     comes_back):
    """X keeps no idempotency key: a worker killed after X took the post leaves no trace but the claim, and
    the next attempt hears "duplicate content". The post is out there (chaos found it recorded as skipped)."""
    account, due = plan_posts(live, sample_feed)
    killed_mid_attempt(live, due[0], "t1", utcnow() - timedelta(hours=1))
    token = "t1"
    if comes_back == "revived by the tick":
        dispatched(live, utcnow())
        assert (reload(live, due[0]).status, reload(live, due[0]).uncertain) == ("pending", True)
        token = "t2"

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=403, json=DUPLICATE)
        post = publish(live, account, due[0], token=token)

    assert post.status == "ambiguous" and "probably posted" in post.error

def test_a_rate_limit_parks_the_account_until_the_later_reset_without_counting_an_attempt(live, sample_feed):
    account, due = plan_posts(live, sample_feed)
    reset, daily = int(time.time()) + 900, int(time.time()) + 7200

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=429, json={"title": "Too Many Requests", "detail": "Too Many Requests"},
                 headers={"x-rate-limit-reset": str(reset), "x-user-limit-24hour-limit": "17",
                          "x-user-limit-24hour-remaining": "0", "x-user-limit-24hour-reset": str(daily)})
        post = publish(live, account, due[0])

    stored = reload(live, due[0])
    assert (stored.status, stored.attempts, stored.claimed_by) == ("pending", 0, None)
    assert "rate limit" in post.error.lower()
    assert stored.account.parked_until == datetime.fromtimestamp(daily, UTC)
    assert dispatched(live, utcnow() + timedelta(hours=1)) == []  # parked: nothing goes before the reset
    assert dispatched(live, datetime.fromtimestamp(daily + 1, UTC)) != []


def test_a_server_error_is_retried_with_backoff(live, sample_feed):
    account, due = plan_posts(live, sample_feed)
    before = utcnow()

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=503, json={"title": "Service Unavailable"})
        post = publish(live, account, due[0])

    assert post.status == "pending"
    assert post.attempts == 1
    assert before + timedelta(seconds=posts.RETRY_BASE) <= post.next_attempt_at
    assert post.next_attempt_at <= utcnow() + timedelta(seconds=posts.RETRY_MAX)


def test_it_retries_when_x_cannot_be_reached(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, body=requests.ConnectionError("connection refused"))
        post = publish(live, account, due[0])

    assert post.status == "pending"
    assert post.error


def test_bad_credentials_pause_the_account_with_the_reason_and_keep_the_post(live, sample_feed):
    account, due = plan_posts(live, sample_feed)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=401,
                 json={"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})
        post = publish(live, account, due[0])
        assert len(rsps.calls) == 1

    stored = reload(live, due[0])
    assert stored.status == "pending" and stored.attempts == 0
    assert stored.account.status == "paused"
    assert stored.account.paused_reason == post.error
    assert dispatched(live, utcnow() + timedelta(days=1)) == []  # no retry storm: nothing goes until resumed
    with transaction(live.Session) as session:
        accounts.resume(session.get(SocialAccount, account.id))
    assert len(dispatched(live, utcnow() + timedelta(days=1))) == 1


# ── Bluesky's record key ─────────────────────────────────────────────────────


class RecordingBluesky:
    """A Bluesky client that notes each attempt's record key; a post in `fail_once` first gets a 502 that may
    have reached the PDS, as a gateway's answer does."""

    network, dry_run = "bluesky", False

    def __init__(self, fail_once=()):
        self.attempts: list[tuple[int, str]] = []
        self.fail_once = set(fail_once)

    def publish(self, request):
        self.attempts.append((request.post_id, request.rkey))
        if request.post_id in self.fail_once:
            self.fail_once.discard(request.post_id)
            raise TransportError("Bluesky server error (502 UpstreamFailure: …)", permanent=False, code=502,
                                 uncertain=True)
        return Published(f"at://did:plc:newsroom/app.bsky.feed.post/{request.rkey}", None)


def bluesky_batch(svc, stories: int) -> list[int]:
    """`stories` new stories planned for one Bluesky account in one batch: every post dated alike."""
    now = utcnow()
    with transaction(svc.Session) as session:
        session.add(SocialAccount(name="bsky", network="bluesky", settings={}, created_at=now - timedelta(minutes=1)))
        session.add_all(Article(identity=str(i), url=f"https://news.example/{i}/", title=f"Story number {i}",
                                lead="", content_hash=f"{i:064d}", categories=[], published_at=now, first_seen_at=now)
                        for i in range(stories))
        session.flush()
        return posts.plan(session, svc.settings, now)


def test_two_thousand_posts_of_one_batch_get_two_thousand_record_keys_each_kept_for_its_retry(svc):
    """Issue 19: the clock id was the post id mod 1024, so posts 1 and 1025 of one batch (dated alike) had the
    same key; the second was refused, found "its" record in place, and was marked posted."""
    planned = bluesky_batch(svc, 2000)
    twins = (planned[0], planned[1024])  # what the old key could not tell apart
    client = RecordingBluesky(fail_once=twins)

    for post_id in planned:
        posts.publish(svc.Session, svc.settings, client, post_id, token=f"first-{post_id}")
    with transaction(svc.Session) as session:
        posts.edit_text(session.get(Post, twins[0]), "Story number 0, as an editor put it https://news.example/0/")
    for post_id in twins:
        posts.publish(svc.Session, svc.settings, client, post_id, token=f"retry-{post_id}")

    first = {}
    for post_id, rkey in client.attempts:
        assert first.setdefault(post_id, rkey) == rkey  # a retry, after an edit too, sends the same key
    assert len(client.attempts) == 2002 and len(set(first.values())) == 2000
    assert all(TID_RE.match(rkey) for rkey in first.values())
    assert sorted(first, key=first.get) == sorted(first)  # in the order they were made, as TIDs sort
    with transaction(svc.Session) as session:
        stored = {post.id: post for post in session.scalars(select(Post))}
        assert all(stored[i].payload["rkey"] == first[i] and stored[i].status == "posted" for i in planned)


def test_a_post_tried_before_the_upgrade_keeps_the_record_key_it_was_tried_with(svc):
    """An attempt by the previous version may have reached the PDS under the old key: its retry must look
    there, not post again under a new one."""
    [post_id] = bluesky_batch(svc, 1)
    with transaction(svc.Session) as session:
        post = session.get(Post, post_id)
        post.attempts, post.uncertain, created = 1, True, post.created_at
    client = RecordingBluesky()

    posts.publish(svc.Session, svc.settings, client, post_id, token="after-the-upgrade")

    assert client.attempts == [(post_id, tid(created, post_id % 1024))]


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
    assert payload["key"] == f"syndicate-post-{due[0]}"
    assert post.status == "posted"
    assert post.dry_run is True
    assert reload(svc, due[0]).dry_run is True


# ── the link card, read before a post is queued ──────────────────────────────

PAGE = b"""<!doctype html><html><head><meta charset="utf-8">
<title>Armenia Conducts Joint Military Exercises With US - TruthUSA</title>
<meta property="og:title" content="Armenia Conducts Joint Military Exercises With US">
<meta property="og:description" content="The drills strain relations with Russia.">
<meta property="og:image" content="/wp-content/uploads/armenia.png">
<meta name="twitter:card" content="summary_large_image">
</head><body><p>Story</p></body></html>"""
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def test_it_reads_each_article_page_once_for_its_card_and_notes_an_unreachable_one(svc, feed_server):
    page = feed_server.serve("/armenia/", PAGE, **{"Content-Type": "text/html; charset=utf-8"})
    feed_server.serve("/wp-content/uploads/armenia.png", PNG, **{"Content-Type": "image/png"})
    missing = feed_server.serve("/gone/", b"not here", status=404)
    now = utcnow()
    with transaction(svc.Session) as session:
        for name in ("x", "bsky"):
            account = SocialAccount(name=name, network="x" if name == "x" else "bluesky", settings={},
                                    created_at=now - timedelta(minutes=1))
            session.add(account)
        for n, url in enumerate((page, missing)):
            session.add(Article(identity=str(n), url=url, title=f"Story {n}", lead="", content_hash=f"{n:064d}",
                                categories=[], published_at=now, first_seen_at=now))
        session.flush()
        planned = posts.plan(session, svc.settings, now)
    checks.check_cards(svc.Session, svc.settings, planned)

    with transaction(svc.Session) as session:
        stored = {(p.account.name, p.article.url): p for p in session.scalars(select(Post))}
        good, bad = stored[("bsky", page)], stored[("x", missing)]
        assert good.payload["card"] == {"url": page, "title": "Armenia Conducts Joint Military Exercises With US",
                                        "description": "The drills strain relations with Russia.",
                                        "image_url": page.replace("/armenia/", "/wp-content/uploads/armenia.png"),
                                        "card_type": "summary_large_image"}
        assert "404" in bad.payload["card_error"] and "card" not in bad.payload
        assert good.payload["url"].startswith(page)  # the teaser's own fields are kept
        card = checks.card_for(good.payload, svc.settings, with_image=True)  # Bluesky's thumbnail, fetched when posting
        assert (card.image, card.image_type) == (PNG, "image/png")
        assert checks.card_for(bad.payload, svc.settings, with_image=True) is None


def test_every_waiting_post_has_its_card_checked_once_however_it_was_made(svc, feed_server):
    """Planned without a check (by an older run, or a path that only plans), re-shared by an editor, or
    planned now: the next `prepare` — the tick's and `feed poll`'s — reads each page once, and never again."""
    page = feed_server.serve("/armenia/", PAGE, **{"Content-Type": "text/html; charset=utf-8"})
    now = utcnow()
    with transaction(svc.Session) as session:
        account = SocialAccount(name="bsky", network="bluesky", settings={}, created_at=now - timedelta(minutes=1))
        session.add(account)
        session.add(Article(identity="a", url=page, title="Story", lead="", content_hash="a" * 64, categories=[],
                            published_at=now, first_seen_at=now))
        session.flush()
        [first] = posts.plan(session, svc.settings, now)
        done = posts.reshare(session, session.get(Post, first).article, account, now=now)
        done.status = "posted"  # gone out already: nothing left to check
        again = posts.reshare(session, session.get(Post, first).article, account, now=now)
        again_id, done_id = again.id, done.id

    assert posts.prepare(svc.Session, svc.settings) == []  # nothing new to plan; two waiting posts to check
    posts.prepare(svc.Session, svc.settings)

    with transaction(svc.Session) as session:
        assert [session.get(Post, i).payload.get("card", {}).get("title") for i in (first, again_id)] == [
            "Armenia Conducts Joint Military Exercises With US"] * 2
        assert not {"card", "card_error"} & session.get(Post, done_id).payload.keys()
    assert [path for path, _ in feed_server.requests] == ["/armenia/"]  # one page, read once for both


def test_a_backlog_of_stalling_pages_is_checked_a_budget_at_a_time_never_from_the_start_again(svc, feed_server,
                                                                                               monkeypatch):
    """A tick cut short by its time limit used to lose every card it had read; a site that stalls on every
    page would have held the tick's dispatch back for good. Each finding is kept at once, and a call stops
    reading when its budget is spent: the rest wait for the next tick."""
    good = feed_server.serve("/armenia/", PAGE, **{"Content-Type": "text/html"})
    monkeypatch.setattr(checks, "CARD_DEADLINE", 1.0)
    monkeypatch.setattr(checks, "CARD_BUDGET", 0.1)
    now = utcnow()
    with socket.create_server(("127.0.0.1", 0)) as stalling:  # takes the request, never answers
        slow = f"http://127.0.0.1:{stalling.getsockname()[1]}/slow/"
        with transaction(svc.Session) as session:
            session.add(SocialAccount(name="bsky", network="bluesky", settings={},
                                      created_at=now - timedelta(minutes=1)))
            for n, url in enumerate((slow, good)):
                session.add(Article(identity=str(n), url=url, title=f"Story {n}", lead="", content_hash=f"{n:064d}",
                                    categories=[], published_at=now + timedelta(seconds=n), first_seen_at=now))
            session.flush()
            first, second = posts.plan(session, svc.settings, now)

        checks.check_cards(svc.Session, svc.settings)
        assert "deadline" in reload(svc, first).payload["card_error"]  # kept, though the call stopped there
        assert checks.unchecked(reload(svc, second).payload)  # left for the next call
        checks.check_cards(svc.Session, svc.settings)

        assert reload(svc, second).payload["card"]["title"] == "Armenia Conducts Joint Military Exercises With US"
        stalling.setblocking(False)
        assert len(list(iter(lambda: _accepted(stalling), None))) == 1  # the stalling page was never read again


def _accepted(listener: socket.socket) -> socket.socket | None:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return None
    connection.close()
    return connection


class TakenOverMeanwhile:
    """A network call so slow that the claim went stale and another task took the post (revived by the
    tick, claimed as task-2), and then answers `outcome`."""

    network, dry_run = "x", False

    def __init__(self, svc, post_id: int, outcome):
        self.svc, self.post_id, self.outcome = svc, post_id, outcome

    def publish(self, request):
        with transaction(self.svc.Session) as session:
            session.get(Post, self.post_id).claimed_by = "task-2"
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize("outcome", [TransportError("x server error 503", permanent=False, code=503),
                                     TransportError("x refused the post", permanent=True, code=403),
                                     Published("99", "https://x.com/i/web/status/99")],
                         ids=["retry", "refused", "posted"])
def test_a_task_whose_claim_was_taken_over_writes_no_outcome(svc, sample_feed, outcome, caplog):
    account, planned = plan_posts(svc, sample_feed)

    posts.publish(svc.Session, svc.settings, TakenOverMeanwhile(svc, planned[0], outcome), planned[0], token="task-1")

    stored = reload(svc, planned[0])
    assert (stored.status, stored.claimed_by, stored.attempts, stored.remote_id) == ("sending", "task-2", 0, None)
    # A post that went out all the same is said, with where: the one thing the ledger can't hold then.
    assert ("may be on the network twice" in caplog.text) == isinstance(outcome, Published)
