"""Taking a post back and withdrawing a story, in the domain: retraction.retract and retraction.withdraw with the real
clients (tweepy and Mastodon.py talking to `responses`, atproto to `respx`) and the dry run's outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
import respx
from sqlalchemy import select

from conftest import configured
from syndicate import ledger
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.errors import InvalidInput
from syndicate.ingest import feeds
from syndicate.models import Article, Delivery, Edition, EditionArticle, Post, SocialAccount, utcnow
from syndicate.newsletters import editions, lists
from syndicate.social import accounts, pace, posts, retraction
from syndicate.subscribers import consent

FEED_URL = "https://truthusa.example/feed/"
TWEETS = "https://api.twitter.com/2/tweets"
INSTANCE = "https://social.example"
PDS = "https://bsky.social/xrpc"
DID = "did:plc:newsroom7abcdefghijklmno"
X_CREDENTIALS = dict(x_consumer_key="ck", x_consumer_secret="cs", x_access_token="at", x_access_token_secret="ats")
WHEN = datetime(2026, 5, 5, 9, 30, tzinfo=UTC)
PACE = dict(window="always", min_gap=0, max_age=0)  # any hour, no gap: pacing is tested elsewhere


@pytest.fixture
def live(make_settings, tmp_path):
    """X credentials set: the default account "x" posts through the real tweepy client."""
    return configured(make_settings(database_url=f"sqlite:///{tmp_path / 'live.db'}", **X_CREDENTIALS), eager=True)


def client_for(svc):
    return lambda account, dry_run: svc.social_client(account, dry_run=dry_run)


def newsroom(svc, sample_feed) -> list[int]:
    """The default account (live X here) and the sample feed's four stories: their pending posts' ids."""
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        session.scalar(select(SocialAccount)).settings = PACE
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        return sorted(posts.plan(session, svc.settings))


def posted_on_x(svc, post_id: int, tweet_id: str = "1234") -> None:
    """Published for real: tweepy's POST /2/tweets, answered by `responses`."""
    with transaction(svc.Session) as session:
        client = svc.social_client(session.get(Post, post_id).account)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": tweet_id, "text": "…"}})
        assert posts.publish(svc.Session, svc.settings, client, post_id, token="t").status == "posted"


def row(svc, post_id: int) -> Post:
    with transaction(svc.Session) as session:
        return session.get(Post, post_id)


def retract(svc, post_id: int, by: str = "ada") -> retraction.Retraction:
    return retraction.retract(svc.Session, client_for(svc), post_id, by, clock=lambda: WHEN)


# ── one post ─────────────────────────────────────────────────────────────────


def test_a_posted_teaser_is_deleted_on_x_and_recorded_with_who_and_when(live, sample_feed):
    first, *_ = newsroom(live, sample_feed)
    posted_on_x(live, first, "1234")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", json={"data": {"deleted": True}})
        done = retract(live, first)
        again = retract(live, first, by="bob")
        assert len(rsps.calls) == 1  # twice is harmless: the second time asks nothing of X

    assert (done.outcome, done.settled) == ("retracted", True)
    assert done.message == "deleted from X at https://x.com/i/web/status/1234"
    assert (again.outcome, again.message) == ("unchanged", "taken back already, by ada on 2026-05-05 09:30 UTC")
    stored = row(live, first)
    assert (stored.status, stored.retracted_by, stored.error) == ("retracted", "ada", None)
    assert stored.retracted_at.replace(tzinfo=UTC) == WHEN
    assert stored.remote_id == "1234"  # where it was stays on the row


def test_a_teaser_x_no_longer_has_counts_as_taken_back(live, sample_feed):
    first, *_ = newsroom(live, sample_feed)
    posted_on_x(live, first, "1234")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", status=404, json={"title": "Not Found Error"})
        done = retract(live, first)

    assert done.outcome == "retracted" and "had it no more" in done.message
    assert row(live, first).status == "retracted" and "had it no more" in row(live, first).error


def test_a_failed_deletion_leaves_the_post_up_says_when_to_try_again_and_a_second_try_takes_it_back(live,
                                                                                                  sample_feed):
    first, *_ = newsroom(live, sample_feed)
    posted_on_x(live, first, "1234")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", status=503, json={"title": "Service Unavailable"})
        rsps.add(responses.DELETE, f"{TWEETS}/1234", body=requests.ConnectionError("connection reset"))
        failed = retract(live, first)
        unreachable = retract(live, first)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", json={"data": {"deleted": True}})
        done = retract(live, first)

    assert (failed.outcome, failed.settled) == ("failed", False)
    assert "X server error" in failed.message and "still up: try again in a few minutes" in failed.message
    assert "cannot reach X" in unreachable.message
    assert done.outcome == "retracted" and row(live, first).status == "retracted"


def test_a_refused_deletion_is_recorded_on_the_post_with_what_to_do(live, sample_feed):
    first, *_ = newsroom(live, sample_feed)
    posted_on_x(live, first, "1234")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", status=400,
                 json={"title": "Invalid Request", "detail": "One or more parameters to your request was invalid."})
        failed = retract(live, first)

    assert failed.outcome == "failed"
    assert "delete it by hand at https://x.com/i/web/status/1234" in failed.message
    stored = row(live, first)
    assert stored.status == "posted" and stored.retracted_at is None
    assert stored.error.startswith("not taken back: X refused to delete the post: One or more parameters")


def test_an_ambiguous_teaser_has_no_id_to_delete_by_so_it_is_recorded_and_left_to_the_editor(live, sample_feed):
    first, *_ = newsroom(live, sample_feed)
    with transaction(live.Session) as session:
        post = session.get(Post, first)
        post.status, post.posted_at, post.error = "ambiguous", WHEN, "X says duplicate content — probably posted"

    with responses.RequestsMock():  # no route: a request to X would fail the test
        done = retract(live, first)

    assert (done.outcome, done.settled) == ("by hand", False)
    assert "can't be deleted from here" in done.message and "delete it by hand" in done.message
    stored = row(live, first)
    assert (stored.status, stored.retracted_by) == ("retracted", "ada")
    assert "find it on x's X page" in stored.error


def test_a_teaser_that_has_not_gone_out_is_cancelled_and_never_goes(svc, sample_feed):
    first, second, *_ = newsroom(svc, sample_feed)
    with transaction(svc.Session) as session:
        posts.hold(session.get(Post, second))

    waiting, held = retract(svc, first), retract(svc, second)

    assert (waiting.outcome, held.outcome) == ("cancelled", "cancelled")
    assert "it had not gone out" in waiting.message
    for post_id in (first, second):
        assert (row(svc, post_id).status, row(svc, post_id).error) == ("cancelled", "taken back by ada before it "
                                                                                    "went out")
    with transaction(svc.Session) as session:
        assert not {first, second} & set(pace.dispatch(session, svc.settings, utcnow() + timedelta(days=1)))


def test_a_teaser_being_posted_this_moment_is_refused_then_taken_back_once_it_is_out(live, sample_feed):
    """A worker holds the claim (its request to X in flight): the editor hears to try again in a minute, nothing
    is asked of X, and the post ends up posted by that worker — then it can be taken back."""
    first, *_ = newsroom(live, sample_feed)
    with transaction(live.Session) as session:
        assert ledger.claim(session, Post, Post.id == first, "worker-1", utcnow()) == 1
        client = live.social_client(session.get(Post, first).account)

    with responses.RequestsMock():
        busy = retract(live, first)
    assert (busy.outcome, busy.settled) == ("busy", False) and "try again in a minute" in busy.message
    assert row(live, first).status == "sending"

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "77", "text": "…"}})
        assert posts.publish(live.Session, live.settings, client, first, token="worker-1").status == "posted"
        rsps.add(responses.DELETE, f"{TWEETS}/77", json={"data": {"deleted": True}})
        assert retract(live, first).outcome == "retracted"


def test_a_teaser_that_never_went_out_has_nothing_to_take_back(svc, sample_feed):
    first, *_ = newsroom(svc, sample_feed)
    with transaction(svc.Session) as session:
        session.get(Post, first).status = "failed"

    done = retract(svc, first)

    assert (done.outcome, done.message) == ("unchanged", "it never went out (failed): nothing to take back")
    assert row(svc, first).status == "failed"


def test_a_dry_run_teaser_is_taken_back_in_the_outbox(svc, sample_feed):
    first, *_ = newsroom(svc, sample_feed)  # no X credentials: the default account is a dry run
    with transaction(svc.Session) as session:
        client = svc.social_client(session.get(Post, first).account)
    published = posts.publish(svc.Session, svc.settings, client, first, token="t")

    done = retract(svc, first)

    outbox = svc.settings.outbox / "posts"
    written = json.loads((outbox / f"syndicate-post-{first}.retract.json").read_text())
    assert written["request"] == {"method": "DELETE", "url": f"{TWEETS}/{published.remote_id}"}
    assert (done.outcome, done.message) == ("retracted", "dry run: nothing sent; the deletion X would get is "
                                                         f"written to {outbox}")
    assert row(svc, first).status == "retracted"


def test_a_live_teaser_of_an_account_turned_dry_run_is_not_pretended_away(live, sample_feed):
    first, *_ = newsroom(live, sample_feed)
    posted_on_x(live, first, "1234")
    with transaction(live.Session) as session:
        session.scalar(select(SocialAccount)).settings = PACE | {"dry_run": True}

    with responses.RequestsMock():
        done = retract(live, first)

    assert done.outcome == "failed" and "`syndicate account edit x --live`" in done.message
    assert "https://x.com/i/web/status/1234" in done.message and row(live, first).status == "posted"


def test_a_teaser_taken_back_still_counts_against_the_daily_cap(live, sample_feed):
    first, *_ = newsroom(live, sample_feed)
    posted_on_x(live, first, "1234")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", json={"data": {"deleted": True}})
        retract(live, first)

    with transaction(live.Session) as session:
        recent = pace.recent_posts(session, session.scalar(select(SocialAccount)), utcnow())
    assert len(recent) == 1  # X counted it when it went out


# ── a whole story ────────────────────────────────────────────────────────────


def three_networks(svc, article_id: int) -> dict[str, int]:
    """The story posted on X, Mastodon and Bluesky: each network's post id."""
    ids = {}
    with transaction(svc.Session) as session:
        accounts.add(session, svc.settings.secret_key, "masto", "mastodon", PACE | {"instance": INSTANCE},
                     {"access_token": "masto-token"})
        accounts.add(session, svc.settings.secret_key, "sky", "bluesky", PACE | {"handle": "news.bsky.social"},
                     {"app_password": "app-pass"})
        for account in session.scalars(select(SocialAccount)):
            post = session.scalar(select(Post).where(Post.article_id == article_id, Post.account_id == account.id))
            if post is None:
                post = posts.reshare(session, session.get(Article, article_id), account, env_x=True)
            post.status, post.posted_at = "posted", WHEN
            post.remote_id = {"x": "1234", "mastodon": "112233",
                              "bluesky": f"at://{DID}/app.bsky.feed.post/3lbq7mnwbhk2x"}[account.network]
            ids[account.network] = post.id
    return ids


def session_answer() -> dict:
    import base64

    def jwt(seconds: int) -> str:
        part = base64.urlsafe_b64encode(json.dumps({"sub": DID, "exp": int(utcnow().timestamp()) + seconds})
                                        .encode()).decode().rstrip("=")
        return f"eyJhbGciOiJFUzI1NksifQ.{part}.sig"

    return {"did": DID, "handle": "news.bsky.social", "accessJwt": jwt(7200), "refreshJwt": jwt(86400 * 60)}


def test_withdrawing_a_story_takes_back_its_posts_everywhere_and_one_failing_network_stops_none(live,
                                                                                                sample_feed):
    first, *_ = newsroom(live, sample_feed)
    article_id = row(live, first).article_id
    ids = three_networks(live, article_id)

    with responses.RequestsMock() as rsps, respx.mock(base_url=PDS, assert_all_called=True) as pds:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", status=503, json={"title": "Service Unavailable"})
        rsps.add(responses.DELETE, f"{INSTANCE}/api/v1/statuses/112233", json={"id": "112233"})
        pds.post("/com.atproto.server.createSession").respond(json=session_answer())
        deleted = pds.post("/com.atproto.repo.deleteRecord").respond(json={})
        withdrawn = retraction.withdraw(live.Session, live.settings, client_for(live), article_id, "ada",
                                   clock=lambda: WHEN)

    outcomes = {r.network: r.outcome for r in withdrawn.retractions}
    assert outcomes == {"x": "failed", "mastodon": "retracted", "bluesky": "retracted"}
    assert json.loads(deleted.calls[0].request.content) == {"repo": DID, "collection": "app.bsky.feed.post",
                                                             "rkey": "3lbq7mnwbhk2x"}
    assert (withdrawn.withdrawn_by, withdrawn.already, withdrawn.mailed) == ("ada", False, [])
    assert row(live, ids["x"]).status == "posted" and row(live, ids["mastodon"]).status == "retracted"
    with transaction(live.Session) as session:
        article = session.get(Article, article_id)
        assert (article.withdrawn_at.replace(tzinfo=UTC), article.withdrawn_by) == (WHEN, "ada")

    with responses.RequestsMock() as rsps:  # again: only the post still up is tried
        rsps.add(responses.DELETE, f"{TWEETS}/1234", json={"data": {"deleted": True}})
        again = retraction.withdraw(live.Session, live.settings, client_for(live), article_id, "bob")

    assert again.already and again.withdrawn_by == "ada"
    assert {r.network: r.outcome for r in again.retractions} == {"x": "retracted", "mastodon": "unchanged",
                                                                  "bluesky": "unchanged"}


def test_a_withdrawn_story_is_never_planned_cut_or_posted(svc, sample_feed):
    first, *_ = newsroom(svc, sample_feed)
    with transaction(svc.Session) as session:
        article = session.get(Post, first).article
        article_id = article.id
        newsletter = lists.add_newsletter(session, max_age_hours=0,
                                          slug="daily", name="Daily", from_address="news@example.com",
                                          first_fill="last:10")
        late = accounts.add(session, "k", "late", "x", PACE | {"dry_run": True}, None)
        late.created_at = article.first_seen_at - timedelta(seconds=1)  # every story is its to tease
    with transaction(svc.Session) as session:  # a revived or unclaimed post of the story, as a tick would find it
        article = session.get(Article, article_id)
        article.withdrawn_at, article.withdrawn_by = WHEN, "ada"

    with transaction(svc.Session) as session:
        planned = {session.get(Post, p).article_id for p in posts.plan(session, svc.settings)}
        due = pace.dispatch(session, svc.settings, utcnow())
        cut = [a.id for a in editions.candidates(session, lists.get_newsletter(session, "daily"))]
        with pytest.raises(InvalidInput, match="was withdrawn"):
            posts.reshare(session, session.get(Article, article_id), session.scalar(
                select(SocialAccount).where(SocialAccount.name == "late")))
        assert newsletter.id

    assert article_id not in planned and len(planned) == 3
    assert first not in due and article_id not in cut and len(cut) == 3
    skipped = row(svc, first)
    assert skipped.status == "skipped"
    assert skipped.error == "not posted: the story was withdrawn by ada on 2026-05-05 09:30 UTC"


def test_a_story_withdrawn_after_the_tick_picked_its_teaser_is_not_posted(live, sample_feed):
    newsroom(live, sample_feed)
    with transaction(live.Session) as session:
        [picked] = pace.dispatch(session, live.settings, utcnow())
        client = live.social_client(session.get(Post, picked).account)
        article = session.get(Post, picked).article
        article.withdrawn_at, article.withdrawn_by = WHEN, "ada"

    with responses.RequestsMock():  # nothing may reach X
        post = posts.publish(live.Session, live.settings, client, picked, token="t")

    assert post.status == "skipped" and "withdrawn by ada" in post.error


def test_withdrawing_takes_the_story_out_of_editions_yet_to_go_and_names_those_that_went(svc, sample_feed):
    first, *_ = newsroom(svc, sample_feed)
    with transaction(svc.Session) as session:
        article_id = session.get(Post, first).article_id
        other = session.scalar(select(Article.id).where(Article.id != article_id))
        consent.subscribe(session, "reader@example.com", [
            lists.add_newsletter(session, max_age_hours=0, slug="daily", name="Daily", from_address="news@example.com",
                                          first_fill="last:10").id],
            confirmed=True)
        weekly = lists.add_newsletter(session, max_age_hours=0,
                                      slug="weekly", name="Weekly", from_address="news@example.com")
        alerts = lists.add_newsletter(session, max_age_hours=0,
                                      slug="alerts", name="Alerts", from_address="news@example.com")
        sent = sending.cut(session, lists.get_newsletter(session, "daily"), svc.settings).edition
        sent.status, sent.sent_at = "sent", WHEN
        for delivery in session.scalars(select(Delivery).where(Delivery.edition_id == sent.id)):
            delivery.status = "sent"  # the reader got it
        scheduled = editions.create_edition(session, weekly, svc.settings, status="scheduled",
                                            scheduled_for=utcnow() + timedelta(hours=5),
                                            articles=[session.get(Article, article_id), session.get(Article, other)])
        alone = editions.create_edition(session, alerts, svc.settings, status="draft",
                                        articles=[session.get(Article, article_id)])
        title = session.get(Article, article_id).title
        ids = sent.id, scheduled.id, alone.id

    withdrawn = retraction.withdraw(svc.Session, svc.settings, client_for(svc), article_id, "cli")

    assert withdrawn.mailed == [dict(newsletter="Daily", slug="daily", number=1, status="sent", readers=1,
                                     sent_at=withdrawn.mailed[0]["sent_at"])]
    assert withdrawn.unsent == ["Weekly #1 (scheduled): taken out, the rest of it goes as planned",
                                "Alerts #1 (draft): it held only this story, so it is cancelled"]
    with transaction(svc.Session) as session:
        kept = session.scalars(select(EditionArticle.article_id).where(EditionArticle.edition_id == ids[1])).all()
        assert kept == [other]
        assert title not in session.get(Edition, ids[1]).html  # rendered again without it
        assert session.get(Edition, ids[2]).status == "cancelled"
        assert title in session.get(Edition, ids[0]).html  # what was mailed stays as it was mailed
