"""Never a flood: the account's window (DST-correct), gap, daily cap and announced limits; the queue's order;
the kill switch; editors' holds, schedules, edits and re-shares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.models import Article, Post, SocialAccount
from syndicate.social import accounts, pace, posts
from syndicate.social.accounts import AccountSettings

T0 = datetime(2030, 6, 3, 10, 0, tzinfo=UTC)  # a Monday, 12:00 in Berlin (CEST)
BERLIN = dict(timezone="Europe/Berlin", window="07:00-22:00")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# ── the pace, on plain data ──────────────────────────────────────────────────


def test_it_waits_the_minimum_gap_after_the_last_post():
    settings = AccountSettings(min_gap=600, window="always")
    assert pace.next_slot(settings, T0, T0 - timedelta(minutes=4), [], None) == T0 + timedelta(minutes=6)
    assert pace.next_slot(settings, T0, T0 - timedelta(minutes=11), [], None) == T0


def test_it_opens_the_window_at_seven_local_time_the_next_morning():
    settings = AccountSettings(**BERLIN)
    late = at("2030-06-03T23:30+02:00")
    assert pace.next_slot(settings, late, None, [], None) == at("2030-06-04T07:00+02:00")
    assert pace.next_slot(settings, at("2030-06-04T06:59+02:00"), None, [], None) == at("2030-06-04T07:00+02:00")
    assert pace.next_slot(settings, at("2030-06-04T21:59+02:00"), None, [], None) == at("2030-06-04T21:59+02:00")


@pytest.mark.parametrize("night, opening", [
    ("2030-03-30T23:00+01:00", "2030-03-31T07:00+02:00"),  # spring forward at 02:00: 07:00 is 05:00 UTC
    ("2030-10-26T23:00+02:00", "2030-10-27T07:00+01:00"),  # fall back at 03:00: 07:00 is 06:00 UTC
])
def test_the_window_stays_seven_local_across_daylight_saving_changes(night, opening):
    settings = AccountSettings(**BERLIN)
    assert pace.next_slot(settings, at(night), None, [], None) == at(opening)


def test_a_window_may_cross_midnight():
    settings = AccountSettings(timezone="America/New_York", window="22:00-06:00")
    inside = at("2030-06-03T23:30-04:00")
    assert pace.next_slot(settings, inside, None, [], None) == inside
    assert pace.next_slot(settings, at("2030-06-04T03:00-04:00"), None, [], None) == at("2030-06-04T03:00-04:00")
    assert pace.next_slot(settings, at("2030-06-04T12:00-04:00"), None, [], None) == at("2030-06-04T22:00-04:00")


def test_the_daily_cap_counts_any_24_hours():
    settings = AccountSettings(daily_cap=3, min_gap=0, window="always")
    recent = [T0 - timedelta(hours=20), T0 - timedelta(hours=5), T0 - timedelta(hours=1)]
    assert pace.next_slot(settings, T0, None, recent, None) == T0 + timedelta(hours=4)
    assert pace.next_slot(settings, T0, None, recent[1:], None) == T0


def test_a_limit_the_network_announced_holds_until_its_reset():
    settings = AccountSettings(window="always")
    assert pace.next_slot(settings, T0, None, [], T0 + timedelta(minutes=42)) == T0 + timedelta(minutes=42)


@pytest.mark.parametrize("bad, words", [
    (dict(timezone="Mars/Olympus"), "IANA"), (dict(window="7-22"), "07:00-22:00"),
    (dict(window="08:00-08:00"), "always"),
    (dict(daily_cap=0), "pause"), (dict(min_gap=-1), "≥ 0"), (dict(colour="red"), "unknown account setting"),
    (dict(visibility="everyone"), "unlisted"),
])
def test_bad_settings_say_what_to_write_instead(bad, words):
    with pytest.raises(InvalidInput, match=words):
        AccountSettings.from_dict(bad)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
                                           ("300", 300)])
def test_durations_read_as_people_write_them(text, seconds):
    assert accounts.parse_duration(text) == seconds


def test_a_duration_it_cannot_read_is_refused():
    with pytest.raises(InvalidInput, match="10m"):
        accounts.parse_duration("ten minutes")


# ── the tick, on the ledger ──────────────────────────────────────────────────


def story(session, n: int, published: datetime, categories=("World News",)) -> Article:
    article = Article(identity=f"story-{n}", url=f"https://news.example/{n}/", title=f"Story number {n} of the day",
                      lead=f"The lead of story {n}. It has two sentences.", content_hash=f"{n:064d}",
                      categories=list(categories), published_at=published, first_seen_at=published)
    session.add(article)
    session.flush()
    return article


def connect(session, name="x-main", network="x", **settings) -> SocialAccount:
    account = accounts.add(session, "k" * 32, name, network, dict(window="always", min_gap=600) | settings, None)
    account.created_at = T0 - timedelta(days=1)
    return account


def tick(svc, now: datetime) -> list[tuple[int, str]]:
    with transaction(svc.Session) as session:
        posts.plan(session, svc.settings, now)
        ids = pace.dispatch(session, svc.settings, now)
        return [(i, session.get(Post, i).article.identity) for i in ids]


def mark_posted(svc, post_id: int, when: datetime) -> None:
    with transaction(svc.Session) as session:
        post = session.get(Post, post_id)
        post.status, post.posted_at = "posted", when


def test_a_backlog_drains_one_post_per_gap_newest_first(svc):
    with transaction(svc.Session) as session:
        connect(session)
        for n in range(4):
            story(session, n, T0 - timedelta(minutes=50 - n * 10))

    first = tick(svc, T0)
    mark_posted(svc, first[0][0], T0)
    assert [s for _, s in first] == ["story-3"]  # the newest
    assert tick(svc, T0 + timedelta(minutes=1)) == []
    assert tick(svc, T0 + timedelta(minutes=9, seconds=59)) == []
    second = tick(svc, T0 + timedelta(minutes=10))
    assert [s for _, s in second] == ["story-2"]


def test_the_breaking_lane_goes_first(svc):
    with transaction(svc.Session) as session:
        connect(session, breaking_categories=["Breaking"])
        story(session, 1, T0 - timedelta(minutes=5))
        story(session, 2, T0 - timedelta(minutes=30), categories=("Breaking",))

    assert [s for _, s in tick(svc, T0)] == ["story-2"]


def test_a_story_too_old_when_its_turn_comes_is_skipped_with_the_reason(svc):
    with transaction(svc.Session) as session:
        connect(session, max_age=3 * 3600)
        story(session, 1, T0 - timedelta(hours=5))
        story(session, 2, T0 - timedelta(hours=1))

    [(post_id, identity)] = tick(svc, T0)
    mark_posted(svc, post_id, T0)
    assert identity == "story-2"
    assert tick(svc, T0 + timedelta(minutes=10)) == []  # story-1's turn: too old by then
    with transaction(svc.Session) as session:
        old = session.scalar(select(Post).join(Article).where(Article.identity == "story-1"))
        assert old.status == "skipped"
        assert "5 h old" in old.error and "max age is 3 h" in old.error


def test_the_kill_switch_stops_every_account_and_resuming_never_floods(svc):
    with transaction(svc.Session) as session:
        connect(session, "x-main")
        connect(session, "x-sports")
        for n in range(5):
            story(session, n, T0 - timedelta(minutes=n))
        accounts.pause_social(session, "election night")

    assert tick(svc, T0) == []
    assert tick(svc, T0 + timedelta(hours=1)) == []
    with transaction(svc.Session) as session:
        accounts.resume_social(session)
    resumed = tick(svc, T0 + timedelta(hours=1, minutes=1))
    assert len(resumed) == 2  # one per account, not the backlog of ten
    assert tick(svc, T0 + timedelta(hours=1, minutes=2)) == []


def test_held_and_cancelled_posts_wait_and_a_schedule_is_kept_outside_the_window(svc):
    with transaction(svc.Session) as session:
        connect(session, window="07:00-08:00", timezone="UTC")
        for n in range(3):
            story(session, n, T0 - timedelta(minutes=n))
        posts.plan(session, svc.settings, T0)
        held, cancelled, scheduled = session.scalars(select(Post).order_by(Post.id)).all()
        posts.hold(held)
        posts.cancel(cancelled)
        posts.schedule(scheduled, T0 + timedelta(hours=3))  # 13:00 UTC: outside the window, an editor's choice
        expected, cancelled_id = (scheduled.id, scheduled.article.identity), cancelled.id

    assert tick(svc, T0) == []
    assert tick(svc, T0 + timedelta(hours=3)) == [expected]
    with transaction(svc.Session) as session:
        post = session.get(Post, cancelled_id)
        with pytest.raises(InvalidInput, match="cancelled"):
            posts.release(post)


def test_an_edited_story_is_never_posted_again_but_a_reshare_is(svc):
    with transaction(svc.Session) as session:
        account = connect(session)
        article = story(session, 1, T0)
    [(post_id, _)] = tick(svc, T0)
    mark_posted(svc, post_id, T0)
    with transaction(svc.Session) as session:
        session.get(Article, article.id).title = "Story number 1 of the day (corrected)"
    assert tick(svc, T0 + timedelta(hours=1)) == []
    with transaction(svc.Session) as session:
        again = posts.reshare(session, session.get(Article, article.id), session.get(SocialAccount, account.id))
        assert again.share == 1
        again_id = again.id
    assert tick(svc, T0 + timedelta(hours=2)) == [(again_id, "story-1")]


def test_the_queue_shows_when_each_post_is_expected(svc):
    with transaction(svc.Session) as session:
        account = connect(session, min_gap=900)
        for n in range(3):
            story(session, n, T0 - timedelta(minutes=n))
        posts.plan(session, svc.settings, T0)
        times = [when for _, when in pace.projected(session, account, T0)]

    assert times == [T0, T0 + timedelta(minutes=15), T0 + timedelta(minutes=30)]


def test_a_post_scheduled_for_later_lets_the_others_go_first_as_the_ticks_send_them(svc):
    """An editor schedules one teaser for tomorrow: the two others go today, one gap apart, and the list
    says so — the projection is what the ticks then do, post by post."""
    with transaction(svc.Session) as session:
        account = connect(session, min_gap=900)
        for n in range(3):
            story(session, n, T0 - timedelta(minutes=n))
        posts.plan(session, svc.settings, T0)
        first, *_ = pace.queue(session, account)
        posts.schedule(first, T0 + timedelta(days=1))
        projection = [(p.article.identity, when) for p, when in pace.projected(session, account, T0)]

    assert projection == [("story-1", T0), ("story-2", T0 + timedelta(minutes=15)),
                          ("story-0", T0 + timedelta(days=1))]
    sent = []
    for _, when in projection:
        [(post_id, identity)] = tick(svc, when)
        mark_posted(svc, post_id, when)
        sent.append((identity, when))
    assert sent == projection
