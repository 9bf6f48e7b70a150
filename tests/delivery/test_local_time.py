"""Delivery at each reader's local time: one edition, cut and rendered once, sent in waves at the slot's
wall-clock time in each reader's zone; DST-correct; a pause holds the waiting readers, a cancel skips them."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select

from conftest import configured
from syndicate import tasks
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending, waves
from syndicate.errors import InvalidInput
from syndicate.models import Article, Delivery, Edition, Newsletter, Subscriber, Subscription
from syndicate.newsletters import editions, lists, rendering, schedules
from syndicate.subscribers import consent

ZONES = {"ny": "America/New_York", "berlin": "Europe/Berlin", "sydney": "Australia/Sydney"}


def story(session, title: str, seen: datetime) -> None:
    session.add(Article(identity=f"test|{title}", url=f"https://news.example/{abs(hash(title))}", title=title,
                        lead=f"The lead of {title}.", content_hash="x", categories=[], published_at=seen,
                        first_seen_at=seen))
    session.flush()


def local_newsletter(svc, readers: dict[str, str | None], now: datetime, **options) -> int:
    """A daily 07:00 newsletter (Berlin's cron) sent at each reader's local time; readers: name → zone."""
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com", now=now,
                                    cron="0 7 * * *", timezone="Europe/Berlin", max_age_hours=0,
                                    local_time=True, **options)
        for name, zone in readers.items():
            consent.subscribe(session, f"{name}@example.com", [made.id], confirmed=True, now=now, timezone=zone)
        return made.id


@pytest.fixture
def newsroom(make_settings, tmp_path, smtp_server):
    """Tasks inline (the tick hands its batches to workers that run at once), mail to a real SMTP server."""
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'waves.db'}", smtp_url=smtp_server.url),
                     eager=True)
    svc.smtp = smtp_server
    return svc


def run_ticks(svc, start: datetime, end: datetime) -> dict[str, list[datetime]]:
    """The real tick every 30 minutes from `start` to `end` (the clock stands still in each), a story
    arriving each noon UTC; who received a message at which tick."""
    got: dict[str, list[datetime]] = {}
    now = start
    while now < end:
        with time_machine.travel(now, tick=False):
            if now.hour == 12 and now.minute == 0:
                with transaction(svc.Session) as session:
                    story(session, f"News of {now:%m-%d}", now)
            before = len(svc.smtp.messages)
            tasks.tick()
            for message in svc.smtp.messages[before:]:
                for recipient in message.recipients:
                    got.setdefault(recipient.split("@")[0], []).append(now)
        now += timedelta(minutes=30)
    return got


def local(times: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M") for t in times]


# ── the proof: three zones, across a switch ──────────────────────────


def test_each_reader_gets_it_at_0700_their_time_on_both_sides_of_a_dst_switch(newsroom):
    """Europe springs forward on 29 March 2026 and Sydney falls back on 5 April: with the real tick every
    half hour and a real SMTP server, readers in New York, Berlin and Sydney each get every edition at 07:00
    their own time, one render per day, while the UTC moments move with each switch."""
    start = datetime(2026, 3, 27, 12, tzinfo=UTC)
    newsletter_id = local_newsletter(newsroom, ZONES, start)
    got = run_ticks(newsroom, start, datetime(2026, 3, 30, 12, 30, tzinfo=UTC))
    with transaction(newsroom.Session) as session:
        lists.pause_newsletter(session, session.get(Newsletter, newsletter_id))
    week = datetime(2026, 4, 3, 12, tzinfo=UTC)  # the week Sydney falls back
    with transaction(newsroom.Session) as session:
        lists.resume_newsletter(session, session.get(Newsletter, newsletter_id), now=week)
    for name, times in run_ticks(newsroom, week, datetime(2026, 4, 6, 12, 30, tzinfo=UTC)).items():
        got[name] += times

    days = ["03-28", "03-29", "03-30", "04-04", "04-05", "04-06"]
    for name, zone in ZONES.items():
        assert local(got[name], zone) == [f"{day} 07:00" for day in days], name
    # The same wall-clock time, different moments: Berlin 06:00 UTC before its switch and 05:00 after;
    # Sydney 20:00 UTC the evening before, 21:00 once it fell back; New York (switched on 8 March) 11:00.
    assert [t.strftime("%d %H") for t in got["berlin"]] == ["28 06", "29 05", "30 05", "04 05", "05 05", "06 05"]
    assert [t.strftime("%d %H") for t in got["sydney"]] == ["27 20", "28 20", "29 20", "03 20", "04 21", "05 21"]
    assert {t.hour for t in got["ny"]} == {11}

    with transaction(newsroom.Session) as session:
        sent = session.scalars(select(Edition).where(Edition.status == "sent").order_by(Edition.id)).all()
        # One edition per day, cut when Sydney's 07:00 came, and closed only by the tick after New York's wave.
        assert len(sent) == 6
        assert [e.cut_at for e in sent] == got["sydney"]
        assert [e.sent_at for e in sent] == [t + timedelta(minutes=30) for t in got["ny"]]
        rows = session.execute(select(Subscriber.email, Delivery.sent_at, Delivery.edition_id)
                               .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                               .order_by(Delivery.edition_id)).all()
        for name in ZONES:
            assert [r.sent_at for r in rows if r.email.startswith(name)] == got[name]
        # Each day's three copies are of its one render: the edition's subject, for all three readers.
        subjects = [email.message_from_bytes(m.data, policy=email.policy.default)["Subject"]
                    for m in newsroom.smtp.messages]
        assert Counter(subjects) == {e.subject: 3 for e in sent} and len(set(subjects)) == 6

def test_24_and_more_waves_come_from_one_render(newsroom, monkeypatch):
    """Readers in 27 zones: one cut, one render, a wave per distinct moment; the waves page lists them,
    and each goes out when the tick finds it due."""
    renders = []
    real = rendering.render_with_notes
    monkeypatch.setattr(rendering, "render_with_notes", lambda *a, **k: renders.append(1) or real(*a, **k))
    zones = ["Pacific/Kiritimati", "Pacific/Tongatapu", "Pacific/Auckland", "Pacific/Noumea", "Australia/Sydney",
             "Australia/Adelaide", "Asia/Tokyo", "Asia/Shanghai", "Asia/Bangkok", "Asia/Dhaka", "Asia/Kathmandu",
             "Asia/Kolkata", "Asia/Karachi", "Asia/Dubai", "Asia/Tehran", "Europe/Moscow", "Europe/Berlin",
             "Europe/London", "Atlantic/Cape_Verde", "America/Noronha", "America/Sao_Paulo", "America/St_Johns",
             "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "Pacific/Honolulu"]
    readers = {f"r{i}": zone for i, zone in enumerate(zones)} | {"unzoned": None, "also-berlin": "Europe/Berlin"}
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    local_newsletter(newsroom, readers, start)
    with transaction(newsroom.Session) as session:
        story(session, "One story", start)
    first = datetime(2026, 6, 1, 17, tzinfo=UTC)  # 07:00 on 2 June in Kiritimati (UTC+14)
    with time_machine.travel(first - timedelta(minutes=1), tick=False):
        tasks.tick()
    assert not renders and not newsroom.smtp.messages  # nobody's 07:00 yet
    with time_machine.travel(first, tick=False):
        tasks.tick()
    assert [m.recipients for m in newsroom.smtp.messages] == [["r0@example.com"]]
    with transaction(newsroom.Session) as session:
        edition = session.scalar(select(Edition))
        found = waves.waves(session, edition)
        assert len(found) == 27 and found[0].done and not any(w.done for w in found[1:])
        assert found[0].zones == ["Pacific/Kiritimati"] and found[0].at == first
        berlin = next(w for w in found if "Europe/Berlin" in w.zones)
        assert berlin.readers == 3 and berlin.at == datetime(2026, 6, 2, 5, tzinfo=UTC)  # the unzoned one too
        assert found[-1].zones == ["Pacific/Honolulu"] and found[-1].at == datetime(2026, 6, 2, 17, tzinfo=UTC)
        assert deliveries.counts(session, edition.id) == {"sent": 1, "waiting": 28}

    moments = [w.at for w in found]
    for at in moments[1:]:  # the tick at each wave's moment sends that wave and no other
        with time_machine.travel(at, tick=False):
            before = len(newsroom.smtp.messages)
            tasks.tick()
            wave = next(w for w in found if w.at == at)
            assert sum(len(m.recipients) for m in newsroom.smtp.messages[before:]) == wave.readers
    with time_machine.travel(moments[-1] + timedelta(minutes=1), tick=False):
        tasks.tick()  # the tick after the last wave closes the edition
    assert len(renders) == 1
    assert sorted(r for m in newsroom.smtp.messages for r in m.recipients) == sorted(f"{n}@example.com"
                                                                                     for n in readers)
    with transaction(newsroom.Session) as session:
        assert session.get(Edition, edition.id).status == "sent"
        # Honolulu's 07:00 on 2 June is Kiritimati's on 3 June: the next day's run came, with nothing new.
        assert session.scalars(select(Edition.status).order_by(Edition.id)).all() == ["sent", "skipped"]


# ── a pause, a cancel, an unsubscribe ────────────────────────────────────────


def cut_at_first_wave(svc) -> int:
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    local_newsletter(svc, ZONES, start)
    with transaction(svc.Session) as session:
        story(session, "One story", start)
    with time_machine.travel(datetime(2026, 6, 1, 21, tzinfo=UTC), tick=False):  # Sydney's 07:00
        tasks.tick()
    with transaction(svc.Session) as session:
        edition = session.scalar(select(Edition))
        assert deliveries.counts(session, edition.id) == {"sent": 1, "waiting": 2}
        return edition.id


def test_the_hold_and_the_wake_work_on_both_databases(database_url, make_settings, smtp_server):
    svc = configured(make_settings(database_url=database_url, smtp_url=smtp_server.url), eager=True)
    svc.smtp = smtp_server
    edition_id = cut_at_first_wave(svc)
    with transaction(svc.Session) as session:
        said = waves.summary(session, session.get(Edition, edition_id))
    assert [w["at"] for w in said["waves"]] == [datetime(2026, 6, 1, 21, tzinfo=UTC),
                                                 datetime(2026, 6, 2, 5, tzinfo=UTC),
                                                 datetime(2026, 6, 2, 11, tzinfo=UTC)]
    with time_machine.travel(datetime(2026, 6, 2, 5, tzinfo=UTC), tick=False):
        tasks.tick()
    assert [m.recipients for m in smtp_server.messages] == [["sydney@example.com"], ["berlin@example.com"]]
    with transaction(svc.Session) as session:
        assert deliveries.counts(session, edition_id) == {"sent": 2, "waiting": 1}


def test_each_wave_is_a_run_of_consecutive_rows_and_the_cut_hands_out_only_the_first(
        database_url, make_settings, smtp_server):
    """Readers of three zones interleaved by id, a third of them with a topic (their rows are written after
    the INSERT … SELECT's, one by one): among the readers written together, each wave's rows are one run of
    ids, so a wave's batches are short ranges of its own; the cut hands workers the first wave's batches and
    nothing else."""
    svc = configured(make_settings(database_url=database_url, smtp_url=smtp_server.url, batch_size=3))
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    names = [f"{city}{i}" for i in range(6) for city in ZONES]  # ny0, berlin0, sydney0, ny1 …: zones by turns
    newsletter_id = local_newsletter(svc, {name: ZONES[name.rstrip("0123456789")] for name in names}, start)
    with transaction(svc.Session) as session:
        session.add(Article(identity="test|politics", url="https://news.example/politics", title="A vote",
                            lead="The lead.", content_hash="x", categories=["Politics"], published_at=start,
                            first_seen_at=start))
        for subscription, email in session.execute(select(Subscription, Subscriber.email).join(Subscriber)
                                                   .where(Subscription.newsletter_id == newsletter_id)):
            if email.split("@")[0][-1] in "04":
                subscription.topics = ["politics"]
    sydney = datetime(2026, 6, 1, 21, tzinfo=UTC)
    with transaction(svc.Session) as session:
        cut = sending.run_regular(session, newsletter_id, svc.settings, sydney)
        rows = session.execute(select(Delivery.id, Delivery.status, Delivery.next_attempt_at, Subscriber.email)
                               .join(Subscriber).where(Delivery.edition_id == cut.edition.id)
                               .order_by(Delivery.id)).all()
    assert len(rows) == len(names)
    chose = [row for row in rows if row.email.split("@")[0][-1] in "04"]
    for written_together in ([row for row in rows if row not in chose], chose):
        order = [(row.next_attempt_at, row.id) for row in written_together]
        assert order == sorted(order)  # Sydney's wave, then Berlin's, then New York's
        ids = [row.id for row in written_together]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    by_moment = {}
    for row in rows:
        by_moment.setdefault(row.next_attempt_at, []).append(row)
    assert [{row.email.split("@")[0].rstrip("0123456789") for row in wave} for wave in by_moment.values()] == [
        {"sydney"}, {"berlin"}, {"ny"}]
    assert [len(wave) for wave in by_moment.values()] == [6, 6, 6]
    assert [row.status for row in rows if row.status == "pending"] == ["pending"] * 6
    first = sorted(row.id for row in by_moment[sydney])
    assert [row.status for row in by_moment[sydney]] == ["pending"] * 6
    assert cut.batches == [(cut.edition.id, first[0], first[2]), (cut.edition.id, first[3], first[5])]


def test_a_paused_edition_holds_its_waiting_readers_until_resumed(newsroom):
    edition_id = cut_at_first_wave(newsroom)
    with transaction(newsroom.Session) as session:
        editions.pause(session, session.get(Edition, edition_id))
    with time_machine.travel(datetime(2026, 6, 2, 12, tzinfo=UTC), tick=False):  # past every wave
        tasks.tick()
    assert len(newsroom.smtp.messages) == 1
    with transaction(newsroom.Session) as session:
        assert deliveries.counts(session, edition_id) == {"sent": 1, "waiting": 2}
        sending.resume(session, session.get(Edition, edition_id), newsroom.settings)
    with time_machine.travel(datetime(2026, 6, 2, 12, 1, tzinfo=UTC), tick=False):
        tasks.tick()
    assert sorted(m.recipients[0] for m in newsroom.smtp.messages) == [f"{n}@example.com" for n in
                                                                     ("berlin", "ny", "sydney")]


def test_a_cancelled_edition_skips_its_waiting_readers_and_an_unsubscribe_skips_one(newsroom):
    edition_id = cut_at_first_wave(newsroom)
    with transaction(newsroom.Session) as session:
        reader = session.scalar(select(Subscriber).where(Subscriber.email == "ny@example.com"))
        consent.skip_open_deliveries(session, reader.id, "unsubscribed")
        assert deliveries.counts(session, edition_id) == {"sent": 1, "waiting": 1, "skipped": 1}
        editions.cancel(session, session.get(Edition, edition_id))
        assert deliveries.counts(session, edition_id) == {"sent": 1, "skipped": 2}
    with time_machine.travel(datetime(2026, 6, 2, 12, tzinfo=UTC), tick=False):
        tasks.tick()
    assert len(newsroom.smtp.messages) == 1


def test_an_edition_prepared_for_the_run_starts_at_its_first_readers_time(newsroom):
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    newsletter_id = local_newsletter(newsroom, ZONES, start)
    with transaction(newsroom.Session) as session:
        story(session, "One story", start)
        prepared = editions.prepare_next(session, session.get(Newsletter, newsletter_id), newsroom.settings, start)
        assert prepared.scheduled_for == datetime(2026, 6, 2, 5, tzinfo=UTC)  # the newsletter's own 07:00
    with time_machine.travel(datetime(2026, 6, 1, 21, tzinfo=UTC), tick=False):  # Sydney's
        tasks.tick()
    assert [m.recipients for m in newsroom.smtp.messages] == [["sydney@example.com"]]
    with transaction(newsroom.Session) as session:
        assert session.scalars(select(Edition.id)).all() == [prepared.id]


def test_a_breaking_story_goes_to_every_zone_at_once(newsroom):
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    local_newsletter(newsroom, ZONES, start, breaking_categories=["Breaking"])
    with transaction(newsroom.Session) as session:
        story(session, "Flood", start)
        session.scalar(select(Article)).categories = ["Breaking"]
    with time_machine.travel(start, tick=False):
        tasks.tick()
    assert len(newsroom.smtp.messages) == 3


# ── the wall clock, DST-correct ──────────────────────────────────────────────


@pytest.mark.parametrize("day, clock, zone, expected", [
    (date(2026, 3, 28), time(7), "Europe/Berlin", "2026-03-28T06:00:00+00:00"),
    (date(2026, 3, 29), time(7), "Europe/Berlin", "2026-03-29T05:00:00+00:00"),
    # 02:30 doesn't exist on 29 March in Berlin: the moment the clocks jump (03:00 CEST), as cron runs it.
    (date(2026, 3, 29), time(2, 30), "Europe/Berlin", "2026-03-29T01:00:00+00:00"),
    # 02:30 happens twice on 25 October: the first, summer time's.
    (date(2026, 10, 25), time(2, 30), "Europe/Berlin", "2026-10-25T00:30:00+00:00"),
    # Sydney's 02:30 on 5 April 2026 happens twice too (03:00 falls back to 02:00): the first, AEDT.
    (date(2026, 4, 5), time(2, 30), "Australia/Sydney", "2026-04-04T15:30:00+00:00"),
    # Lord Howe moves by half an hour: 02:15 on 4 October 2026 doesn't exist; 02:30 (+11) is the jump.
    (date(2026, 10, 4), time(2, 15), "Australia/Lord_Howe", "2026-10-03T15:30:00+00:00"),
    (date(2026, 3, 8), time(2, 30), "America/New_York", "2026-03-08T07:00:00+00:00"),
])
def test_a_wall_clock_time_that_a_switch_skips_or_repeats_has_one_moment(day, clock, zone, expected):
    assert schedules.wall_clock(day, clock, zone).isoformat() == expected


def test_the_wall_clock_moment_agrees_with_the_cron_schedule_in_that_zone():
    """The newsletter's own zone's wave is the moment its cron fires: the same answer for a skipped time."""
    for cron, after in (("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC)),
                        ("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC)),
                        ("0 7 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC))):
        fired = schedules.next_run(cron, "Europe/Berlin", after)
        hour, minute = int(cron.split()[1]), int(cron.split()[0])
        day = fired.astimezone(ZoneInfo("Europe/Berlin")).date()
        assert schedules.wall_clock(day, time(hour, minute), "Europe/Berlin") == fired


def test_local_time_needs_a_schedule_and_a_yes_or_no(newsroom):
    with transaction(newsroom.Session) as session:
        with pytest.raises(InvalidInput, match="has no schedule"):
            lists.add_newsletter(session, slug="once", name="Once", from_address="a@example.com", cron=None,
                                 local_time=True)
        made = lists.add_newsletter(session, slug="daily", name="Daily", from_address="a@example.com")
        with pytest.raises(InvalidInput, match="on or off"):
            lists.update_newsletter(session, made, local_time="yes")
        lists.update_newsletter(session, made, local_time=True)
        with pytest.raises(InvalidInput, match="turn local time off"):  # its schedule taken away, not the switch
            lists.update_newsletter(session, made, cron=None)
        lists.update_newsletter(session, made, cron=None, local_time=False)
