"""The calendar: editions, the sends each schedule will make, and teasers on one timeline, in whole days of
the reader's zone; each slot once (an edition made for it takes its projection's place), DST-correct."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conftest import configured
from syndicate.db import transaction
from syndicate.desk import agenda
from syndicate.errors import InvalidInput
from syndicate.models import Article, Edition, Post
from syndicate.newsletters import editions, lists, schedules
from syndicate.social import accounts, pace, posts

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def both(make_settings, database_url):
    """SQLite and PostgreSQL: a slot is matched by its time, which each stores its own way."""
    return configured(make_settings(database_url=database_url))


def morning(session, now, cron: str | None = "0 7 * * *"):
    return lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                from_address="news@example.com", cron=cron, timezone="Europe/Berlin", now=now)


def story(session, now, n: int = 1) -> Article:
    article = Article(identity=f"a{n}", url=f"https://news.example.com/{n}/", title=f"Story {n}", lead="",
                      content_hash=f"{n:064d}", categories=[], published_at=now, first_seen_at=now)
    session.add(article)
    session.flush()
    return article


def projected_times(entries) -> list[datetime]:
    return [e.when for e in entries if e.projected]


@pytest.mark.parametrize("now, utc_hours", [
    # Summer time starts on Sunday 29 March 2026: 07:00 in Berlin is 06:00 UTC before, 05:00 UTC after.
    (datetime(2026, 3, 26, 10, tzinfo=UTC), [6, 6, 5, 5, 5, 5]),
    # It ends on Sunday 25 October 2026: 05:00 UTC before, 06:00 UTC after.
    (datetime(2026, 10, 22, 10, tzinfo=UTC), [5, 5, 6, 6, 6, 6]),
])
def test_a_daily_schedule_stays_at_seven_local_across_the_clock_change(svc, now, utc_hours):
    with transaction(svc.Session) as session:
        morning(session, now)
        entries = agenda.calendar(session, now, days=7, zone=BERLIN)
    times = projected_times(entries)
    # Today's 07:00 has passed at 10:00 UTC: the six days after it, one send each.
    assert [t.astimezone(BERLIN).hour for t in times] == [7] * 6
    assert [t.hour for t in times] == utc_hours
    assert [t.astimezone(BERLIN).date() for t in times] == [now.date() + timedelta(days=d) for d in range(1, 7)]
    days = agenda.by_day(entries, now, 7, BERLIN)
    assert [len(day.entries) for day in days] == [0, 1, 1, 1, 1, 1, 1]


def test_an_edition_prepared_for_a_slot_takes_the_place_of_its_projection(both):
    svc = both
    now = datetime(2026, 3, 26, 10, tzinfo=UTC)
    with transaction(svc.Session) as session:
        newsletter = morning(session, now)
        story(session, now + timedelta(minutes=1))
        edition = editions.prepare_next(session, newsletter, svc.settings, now + timedelta(minutes=2))
        slot = edition.scheduled_for
        entries = agenda.calendar(session, now + timedelta(minutes=3), days=7, zone=BERLIN)
    at_slot = [e for e in entries if e.when == slot]
    assert len(at_slot) == 1
    assert (at_slot[0].projected, at_slot[0].status, at_slot[0].id) == (False, "scheduled", edition.id)
    assert at_slot[0].title == "Story 1" and at_slot[0].source == "The Morning Briefing #1"
    assert at_slot[0].link == f"/desk/editions/{edition.id}"
    assert len(projected_times(entries)) == 5  # the other days are still the schedule's


def test_a_paused_or_cancelled_edition_still_holds_its_slot_but_an_empty_one_does_not(svc):
    now = datetime(2026, 3, 26, 10, tzinfo=UTC)
    with transaction(svc.Session) as session:
        newsletter = morning(session, now)
        empty = editions.prepare_next(session, newsletter, svc.settings, now)  # no stories: skipped
        assert empty.status == "skipped"
        entries = agenda.calendar(session, now, days=2, zone=BERLIN)
        # The tick cuts again at that slot: it stays a projection, and the empty one isn't shown.
        assert [(e.projected, e.status) for e in entries] == [(True, "scheduled")]

        story(session, now)
        edition = editions.prepare_next(session, newsletter, svc.settings, now)
        editions.pause(session, edition)
        assert [(e.projected, e.status) for e in agenda.calendar(session, now, 2, BERLIN)] == [(False, "paused")]
        editions.cancel(session, edition)
        assert [(e.projected, e.status) for e in agenda.calendar(session, now, 2, BERLIN)] == [(False, "cancelled")]


def test_a_paused_newsletter_shows_the_slots_it_would_keep_and_resuming_brings_them_back(svc):
    now = datetime(2026, 3, 26, 10, tzinfo=UTC)
    with transaction(svc.Session) as session:
        newsletter = morning(session, now)
        lists.pause_newsletter(session, newsletter)
        paused = agenda.calendar(session, now, 3, BERLIN)
        assert {e.status for e in paused} == {"paused"} and len(paused) == 2
        assert "paused" in paused[0].note and paused[0].link == "/desk/newsletters/morning"
        lists.resume_newsletter(session, newsletter, now)
        assert {e.status for e in agenda.calendar(session, now, 3, BERLIN)} == {"scheduled"}


def test_sent_today_and_still_sending_since_yesterday_are_on_today(svc):
    now = datetime(2026, 3, 26, 10, tzinfo=UTC)
    with transaction(svc.Session) as session:
        newsletter = morning(session, now - timedelta(days=2), cron=None)
        for number, status, at in [(1, "sending", now - timedelta(days=1)), (2, "sent", now - timedelta(hours=3)),
                                   (3, "sent", now - timedelta(days=1)), (4, "draft", None)]:
            session.add(Edition(newsletter_id=newsletter.id, number=number, status=status, scheduled_for=at,
                                subject=f"Edition {number}"))
        session.flush()
        entries = agenda.calendar(session, now, 2, BERLIN)
    # Yesterday's sent edition is done and gone; the draft has no time; the send still going is today's.
    assert [(e.title, e.status) for e in entries] == [("Edition 1", "sending"), ("Edition 2", "sent")]
    today, tomorrow = agenda.by_day(entries, now, 2, BERLIN)
    assert len(today.entries) == 2 and tomorrow.entries == []


def test_teasers_are_there_when_expected_held_ones_today_and_a_pause_says_why(both):
    svc = both
    now = datetime(2026, 3, 26, 10, tzinfo=UTC)
    with transaction(svc.Session) as session:
        account = accounts.add(session, "k", "x-main", "x", dict(window="always", min_gap=3600), None)
        account.created_at = now - timedelta(minutes=1)
        first, second, third = (story(session, now, n) for n in (1, 2, 3))
        posts.plan(session, svc.settings, now)
        queue = pace.projected(session, account, now)
        held = session.query(Post).filter_by(article_id=third.id).one()
        posts.hold(held)
        posted = session.query(Post).filter_by(article_id=first.id).one()
        posted.status, posted.posted_at = "posted", now - timedelta(hours=1)

        entries = agenda.calendar(session, now, 2, BERLIN)
        teasers = {e.title: e for e in entries if e.kind == "teaser"}
        waiting = teasers[session.query(Post).filter_by(article_id=second.id).one().text]
        assert waiting.status == "pending" and waiting.when in [at for _, at in queue]
        assert (teasers[held.text].status, teasers[held.text].when) == ("held", now)
        assert "once released" in teasers[held.text].note
        assert (teasers[posted.text].status, teasers[posted.text].when) == ("posted", now - timedelta(hours=1))
        assert waiting.link == f"/desk/posts/{waiting.id}" and waiting.account == "x-main"

        accounts.pause_social(session, "election night", now)
        stopped = next(e for e in agenda.calendar(session, now, 2, BERLIN) if e.id == waiting.id)
        assert stopped.status == "paused" and stopped.note == "all social posting is paused: election night"


def test_the_range_is_whole_days_in_the_readers_zone(svc):
    now = datetime(2026, 3, 26, 23, 30, tzinfo=UTC)  # already Friday 00:30 in Berlin
    start, end = agenda.window(now, 7, BERLIN)
    assert start == datetime(2026, 3, 27, tzinfo=BERLIN) and end == datetime(2026, 4, 3, tzinfo=BERLIN)
    assert end - start == timedelta(days=7, hours=-1)  # the hour summer time takes
    with transaction(svc.Session) as session:
        days = agenda.by_day(agenda.calendar(session, now, 7, BERLIN), now, 7, BERLIN)
    assert [d.date.isoformat() for d in days][:2] == ["2026-03-27", "2026-03-28"]
    assert all(d.entries == [] for d in days)  # nothing scheduled: every day is there, and says so


def test_a_calendar_of_no_days_or_months_is_refused(svc):
    with transaction(svc.Session) as session:
        for days in (0, agenda.MAX_DAYS + 1):
            with pytest.raises(InvalidInput, match="1 to 31 days"):
                agenda.calendar(session, days=days)


def test_a_schedule_in_plain_words_and_whom_a_newsletter_reaches(svc):
    assert schedules.explain_schedule("30 6 * * 1-5", "Europe/Berlin") == (
        "At 06:30 on Monday through Friday, Europe/Berlin time")
    assert schedules.explain_schedule(None, "UTC").startswith("No regular editions")
    with pytest.raises(InvalidInput, match="e.g. '0 7 \\* \\* \\*'"):
        schedules.explain_schedule("0 25 * * *", "UTC")
    from syndicate.subscribers import consent
    with transaction(svc.Session) as session:
        newsletter = morning(session, datetime(2026, 3, 26, tzinfo=UTC))
        for email in ("a@example.com", "b@example.com"):
            consent.subscribe(session, email, [newsletter.id], confirmed=email.startswith("a"))
        assert lists.audience(session) == {newsletter.id: 1}
