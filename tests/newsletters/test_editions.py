"""Newsletters as editors run them: schedules across DST, catch-up, breaking stories, filters, first fill,
and the edition lifecycle (draft → scheduled → sending → sent, paused, cancelled) with a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import delete, func, select

from conftest import configured
from syndicate import tokens
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending
from syndicate.delivery.batches import CHECK_EVERY, send_batch
from syndicate.delivery.copies import proofs
from syndicate.errors import InvalidInput
from syndicate.ledger import Leases
from syndicate.models import Article, Delivery, Edition, EditionArticle, Newsletter, Subscriber
from syndicate.newsletters import editions, lists, rendering, schedules
from syndicate.subscribers import consent, rights

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def desk(database_url, make_settings, smtp_server):
    svc = configured(make_settings(database_url=database_url, smtp_url=smtp_server.url, batch_size=10))
    svc.smtp = smtp_server
    return svc


def story(session, title: str, *, categories=(), seen: datetime | None = None, feed_id=None) -> Article:
    seen = seen or datetime.now(UTC)
    article = Article(identity=f"test|{title}", url=f"https://news.example/{abs(hash(title))}", title=title,
                      lead=f"The lead of {title}.", content_hash="x", categories=list(categories),
                      published_at=seen, first_seen_at=seen, feed_id=feed_id)
    session.add(article)
    session.flush()
    return article


def newsletter(svc, readers: int = 3, now: datetime | None = None, **options) -> int:
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug=options.pop("slug", "daily"), name="Daily",
                                    from_address="news@example.com", now=now,
                                    **{"cron": "0 7 * * *", "timezone": "Europe/Berlin", **options})
        for i in range(readers):
            consent.subscribe(session, f"reader{i}@example.com", [made.id], confirmed=True, now=now)
        return made.id


def send(svc, batches) -> None:
    for edition_id, lo, hi in batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, token=f"t-{lo}")
    with transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, datetime.now(UTC))


def received_by(svc) -> list[str]:
    return sorted(r for m in svc.smtp.messages for r in m.recipients)


def all_editions(svc) -> list[Edition]:
    with transaction(svc.Session) as session:
        return list(session.scalars(select(Edition).order_by(Edition.id)))


# ── schedules: DST, catch-up, two ticks ──────────────────────────────────────


def test_a_0700_berlin_edition_goes_out_at_0700_local_on_both_sides_of_each_switch(desk):
    """Half-hourly ticks through both 2026 switches: one edition a day, each at 07:00 Berlin time."""
    newsletter_id = newsletter(desk, now=datetime(2026, 3, 26, 12, tzinfo=UTC))
    slots = []
    for start in (datetime(2026, 3, 26, 12, tzinfo=UTC), datetime(2026, 10, 22, 12, tzinfo=UTC)):
        with transaction(desk.Session) as session:  # the newsletter was paused between the two periods
            lists.resume_newsletter(session, session.get(Newsletter, newsletter_id), now=start)
        for tick in range(4 * 48):
            now = start + timedelta(minutes=30 * tick)
            with transaction(desk.Session) as session:
                if (slot := editions.claim(session, newsletter_id, now)) is not None:
                    slots.append(slot)
    local = [s.astimezone(BERLIN) for s in slots]
    assert [t.strftime("%m-%d %H:%M") for t in local] == [
        "03-27 07:00", "03-28 07:00", "03-29 07:00", "03-30 07:00",
        "10-23 07:00", "10-24 07:00", "10-25 07:00", "10-26 07:00",
    ]
    # The UTC times do move: 06:00 before the spring switch, 05:00 after; back to 06:00 in October.
    assert [s.hour for s in slots] == [6, 6, 5, 5, 5, 5, 6, 6]


@pytest.mark.parametrize("after, expected", [
    # 02:30 doesn't exist on 29 March 2026 in Berlin: that day it runs once, at 03:00 CEST.
    (datetime(2026, 3, 28, 12, tzinfo=UTC), ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    # 02:30 happens twice on 25 October 2026: it runs once.
    (datetime(2026, 10, 24, 12, tzinfo=UTC), ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
])
def test_a_local_time_that_a_switch_skips_or_repeats_runs_exactly_once(after, expected):
    times = schedules.upcoming(Newsletter(cron="30 2 * * *", timezone="Europe/Berlin"), 2, after)
    assert [t.astimezone(BERLIN).isoformat() for t in times] == expected


def test_after_downtime_it_catches_up_once_then_keeps_the_schedule(desk):
    newsletter_id = newsletter(desk, now=datetime(2026, 11, 30, 12, tzinfo=UTC))
    with transaction(desk.Session) as session:
        story(session, "Before the outage", seen=datetime(2026, 11, 30, 20, tzinfo=UTC))
    # The scheduler was down from 05:00 to 11:00 Berlin on 1 December: the 07:00 run was missed.
    back = datetime(2026, 12, 1, 10, tzinfo=UTC)
    for minutes in range(0, 120, 30):
        with time_machine.travel(back + timedelta(minutes=minutes), tick=False):
            send(desk, sending.run_due(desk.Session, desk.settings, back + timedelta(minutes=minutes)))
    sent = [e for e in all_editions(desk) if e.status == "sent"]
    assert len(sent) == 1 and received_by(desk) == [f"reader{i}@example.com" for i in range(3)]
    with transaction(desk.Session) as session:
        next_run = session.get(Newsletter, newsletter_id).next_run_at
    assert next_run.astimezone(BERLIN).isoformat() == "2026-12-02T07:00:00+01:00"


def test_two_ticks_at_once_send_one_edition_once(desk):
    newsletter(desk, readers=25)
    now = datetime.now(UTC)
    with transaction(desk.Session) as session:
        for i in range(3):
            story(session, f"Story {i}")
        session.get(Newsletter, 1).next_run_at = now - timedelta(minutes=1)
    results, barrier = [], threading.Barrier(2)

    def tick():
        barrier.wait()
        results.append(sending.run_due(desk.Session, desk.settings, now))

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    send(desk, [batch for batches in results for batch in batches])
    made = [e for e in all_editions(desk) if e.status != "skipped"]
    assert len(made) == 1
    assert received_by(desk) == sorted(f"reader{i}@example.com" for i in range(25))


# ── what goes in ─────────────────────────────────────────────────────────────


def test_filters_choose_the_stories_by_category_and_feed(desk):
    with transaction(desk.Session) as session:
        made = lists.add_newsletter(session, slug="city", name="City", from_address="city@example.com",
                                    categories_include=["local", "Weather"], categories_exclude=["Sponsored"],
                                    max_items=2)
        story(session, "Council meets", categories=["Local"])
        story(session, "Rain again", categories=["weather"])
        story(session, "Paid for by a bank", categories=["Local", "Sponsored"])
        story(session, "Far away", categories=["World"])
        story(session, "Snow", categories=["Weather"])
        chosen = [a.title for a in editions.new_articles(session, made)]
    assert chosen == ["Snow", "Rain again"]  # newest first, at most max_items; "Council meets" waits


@pytest.mark.parametrize("first_fill, expected", [
    ("none", []),
    ("last:2", ["Three", "Two"]),
    ("hours:30", ["Three", "Two"]),
    ("hours:60", ["Three", "Two", "One"]),
])
def test_the_first_edition_is_filled_as_the_editor_chose(desk, first_fill, expected):
    now = datetime.now(UTC)
    with transaction(desk.Session) as session:
        for title, hours in (("One", 48), ("Two", 24), ("Three", 1)):
            story(session, title, seen=now - timedelta(hours=hours))
        made = lists.add_newsletter(session, slug="new", name="New", from_address="n@example.com",
                                    first_fill=first_fill, now=now)
        assert [a.title for a in editions.new_articles(session, made)] == expected


def test_it_refuses_bad_newsletter_settings_when_typed_not_at_send_time(desk):
    with transaction(desk.Session) as session:
        with pytest.raises(InvalidInput, match="subject template"):
            lists.add_newsletter(session, slug="a", name="A", from_address="a@example.com",
                                 subject_template="{{ top.title ")
        with pytest.raises(InvalidInput, match="last:N"):
            lists.add_newsletter(session, slug="b", name="B", from_address="b@example.com", first_fill="lots")
        with pytest.raises(InvalidInput, match="SYNDICATE_TEMPLATE_DIR"):
            lists.add_newsletter(session, slug="c", name="C", from_address="c@example.com", template="fancy")
        with pytest.raises(InvalidInput, match="short name"):
            lists.add_newsletter(session, slug="Bad Slug", name="D", from_address="d@example.com")
        with pytest.raises(InvalidInput, match="no feed"):
            lists.add_newsletter(session, slug="e", name="E", from_address="e@example.com", feed_ids=[99])


def test_a_breaking_story_goes_out_alone_at_once_and_never_again_in_the_digest(desk):
    newsletter_id = newsletter(desk, breaking_categories=["Breaking"])
    with transaction(desk.Session) as session:
        story(session, "Ordinary news")
        story(session, "Dam breaks", categories=["breaking", "Local"])
    now = datetime.now(UTC)
    results = []
    threads = [threading.Thread(target=lambda: results.append(sending.run_due(desk.Session, desk.settings, now)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    send(desk, [b for r in results for b in r])
    with transaction(desk.Session) as session:
        breaking = session.scalars(select(Edition).where(Edition.kind == "breaking")).all()
        assert len(breaking) == 1 and [i.article.title for i in breaking[0].items] == ["Dam breaks"]
        assert breaking[0].status == "sent" and breaking[0].subject == "Dam breaks"
        digest = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
        assert [i.article.title for i in digest.edition.items] == ["Ordinary news"]
    assert len(received_by(desk)) == 3


def test_a_story_filed_only_under_the_breaking_category_passes_an_include_filter_but_not_an_exclude(desk):
    newsletter_id = newsletter(desk, categories_include=["Local"], categories_exclude=["Sponsored"],
                               breaking_categories=["Breaking"])
    with transaction(desk.Session) as session:
        story(session, "Dam breaks", categories=["Breaking"])
        story(session, "A bank's breaking offer", categories=["Breaking", "Sponsored"])
        story(session, "Far away", categories=["World"])
    send(desk, sending.run_due(desk.Session, desk.settings, datetime.now(UTC)))
    with transaction(desk.Session) as session:
        made = session.scalars(select(Edition).where(Edition.newsletter_id == newsletter_id)).all()
        assert [(e.kind, [i.article.title for i in e.items]) for e in made] == [("breaking", ["Dam breaks"])]
    assert len(received_by(desk)) == 3


def test_an_empty_cut_is_skipped_and_recorded(desk):
    newsletter_id = newsletter(desk)
    with transaction(desk.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
        assert cut.edition.status == "skipped" and cut.batches == []
        assert cut.edition.note == "no new articles since the last edition"


def test_it_warns_at_the_cut_when_gmail_would_clip_the_html(desk):
    newsletter_id = newsletter(desk, max_items=200)
    with transaction(desk.Session) as session:
        for i in range(200):
            story(session, f"A long headline about something that happened, number {i}")
        made = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings)
        assert len(made.html.encode()) > rendering.GMAIL_CLIPS_AT
        assert made.warnings and "Gmail clips" in made.warnings[0]


# ── the lifecycle ────────────────────────────────────────────────────────────


def test_a_draft_is_edited_previewed_scheduled_and_sent_as_edited(desk, tmp_path):
    newsletter_id = newsletter(desk, cron=None)
    with transaction(desk.Session) as session:
        first, second, third = (story(session, t).id for t in ("First", "Second", "Third"))
        draft = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings)
        draft_id = draft.id
        assert draft.status == "draft" and draft.subject == "Third — and 2 more stories"
        editions.edit(session, draft, desk.settings, remove=[second], order=[first], subject="Our pick")
        assert [i.article_id for i in draft.items] == [first, third]
        assert draft.subject == "Our pick" and draft.html.index("First") < draft.html.index("Third")
        assert "Second" not in draft.html and "Second" not in draft.text
        html, text = rendering.write_preview(desk.settings, draft, tmp_path / "preview")
        assert "Our pick" in html.read_text() and "First" in text.read_text()
        assert "syndicate.invalid" not in html.read_text() + text.read_text()
        at = datetime.now(UTC) + timedelta(hours=2)
        editions.schedule(session, draft, at)
        assert draft.status == "scheduled" and draft.kind == "one-off"

    assert sending.run_due(desk.Session, desk.settings, datetime.now(UTC)) == []  # not yet
    send(desk, sending.run_due(desk.Session, desk.settings, at + timedelta(seconds=1)))
    with transaction(desk.Session) as session:
        sent = session.get(Edition, draft_id)
        assert sent.status == "sent"
        with pytest.raises(InvalidInput, match="what was sent can't change"):
            editions.edit(session, sent, desk.settings, subject="Too late")
        # The removed story is free for the next edition.
        following = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings)
        assert [i.article_id for i in following.items] == [second]
    messages = [email.message_from_bytes(m.data, policy=email.policy.default) for m in desk.smtp.messages]
    assert {m["Subject"] for m in messages} == {"Our pick"} and len(messages) == 3


def test_a_prepared_regular_edition_goes_out_in_its_slot_as_the_editor_left_it(desk):
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    newsletter_id = newsletter(desk, now=now)
    with transaction(desk.Session) as session:
        keep, drop = story(session, "Keep", seen=now).id, story(session, "Drop", seen=now).id
        prepared = editions.prepare_next(session, session.get(Newsletter, newsletter_id), desk.settings, now=now)
        assert prepared.scheduled_for.astimezone(BERLIN).isoformat() == "2026-12-02T07:00:00+01:00"
        editions.edit(session, prepared, desk.settings, remove=[drop])
        story(session, "Arrived later", seen=now + timedelta(hours=1))
    slot = datetime(2026, 12, 2, 6, tzinfo=UTC)
    send(desk, sending.run_due(desk.Session, desk.settings, slot))
    with transaction(desk.Session) as session:
        made = session.scalars(select(Edition).where(Edition.status != "skipped")).all()
        assert len(made) == 1 and [i.article_id for i in made[0].items] == [keep]
        assert made[0].status == "sent"
    # The story that arrived after the preparation and the removed one wait for the next run.
    send(desk, sending.run_due(desk.Session, desk.settings, slot + timedelta(days=1)))
    with transaction(desk.Session) as session:
        last = session.scalars(select(Edition).order_by(Edition.id.desc())).first()
        assert sorted(i.article.title for i in last.items) == ["Arrived later", "Drop"]


def test_an_editor_adds_any_story_and_their_own_words_and_readers_get_them(desk):
    newsletter_id = newsletter(desk, cron=None, categories_include=["Local"])
    with transaction(desk.Session) as session:
        local = story(session, "Council meets", categories=["Local"]).id
        world = story(session, "Far away", categories=["World"]).id  # outside the filter: an editor's pick
        gone = story(session, "Withdrawn one")
        gone.withdrawn_at = datetime.now(UTC)
        draft = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings)
        draft_id = draft.id
        with pytest.raises(InvalidInput, match="was withdrawn"):
            editions.edit(session, draft, desk.settings, add=[gone.id])
        with pytest.raises(InvalidInput, match="keep it to 2,000"):
            editions.edit(session, draft, desk.settings, blurbs={local: "x" * 2001})
        with pytest.raises(InvalidInput, match="not a web address"):
            editions.edit(session, draft, desk.settings, sponsor_text="Bikes", sponsor_url="javascript:alert(1)")
        editions.edit(session, draft, desk.settings, add=[world], order=[world], intro="Two *picks* today.",
                      blurbs={world: "Worth the [long read](https://news.example/far)."},
                      sponsor_text="Bristol Bikes", sponsor_url="https://bikes.example/")
        assert [i.article_id for i in draft.items] == [world, local]
        assert "Two <em>picks</em> today." in draft.html and "Worth the <a" in draft.html
        assert "Sponsored" in draft.html and "SPONSORED\nBristol Bikes\nhttps://bikes.example/" in draft.text
        # A story in an edition of this newsletter goes in no other.
        other = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings,
                                        articles=[story(session, "Third", categories=["Local"])])
        with pytest.raises(InvalidInput, match=f"article {world} is in edition #1 \\(draft\\) already"):
            editions.edit(session, other, desk.settings, add=[world])
        # Cleared again, it renders as a plain edition.
        editions.edit(session, draft, desk.settings, intro="", sponsor_text="", blurbs={world: ""})
        assert "picks" not in draft.html and "Sponsored" not in draft.html and draft.sponsor_url is None
        editions.edit(session, draft, desk.settings, intro="Two *picks* today.", blurbs={world: "Worth it."})
        editions.schedule(session, draft, datetime.now(UTC))
    send(desk, sending.run_due(desk.Session, desk.settings, datetime.now(UTC) + timedelta(seconds=1)))
    messages = [email.message_from_bytes(m.data, policy=email.policy.default) for m in desk.smtp.messages]
    assert len(messages) == 3
    text = messages[0].get_body(("plain",)).get_content()
    assert "Two picks today." in text and "Worth it." in text and text.index("Far away") < text.index("Council")
    with transaction(desk.Session) as session:
        assert session.get(Edition, draft_id).status == "sent"


@pytest.mark.parametrize("moved", [timedelta(hours=-1), timedelta(hours=1)], ids=["earlier", "later"])
def test_a_prepared_regular_edition_rescheduled_is_the_one_mail_of_its_slot(desk, moved):
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    newsletter_id = newsletter(desk, now=now)
    slot = datetime(2026, 12, 2, 6, tzinfo=UTC)
    with transaction(desk.Session) as session:
        story(session, "Prepared", seen=now)
        prepared = editions.prepare_next(session, session.get(Newsletter, newsletter_id), desk.settings, now=now)
        editions.schedule(session, prepared, slot + moved, now=now)
        assert prepared.kind == "regular" and prepared.slot == slot
        # Preparing again finds it, at its new time.
        assert editions.prepare_next(session, session.get(Newsletter, newsletter_id), desk.settings).id == prepared.id
        story(session, "Arrived later", seen=now + timedelta(hours=1))
    for at in (slot - timedelta(hours=1), slot, slot + timedelta(hours=1)):
        send(desk, sending.run_due(desk.Session, desk.settings, at + timedelta(seconds=1)))
    with transaction(desk.Session) as session:
        made = session.scalars(select(Edition).where(Edition.status != "skipped")).all()
        assert [(e.status, [i.article.title for i in e.items]) for e in made] == [("sent", ["Prepared"])]
    assert len(received_by(desk)) == 3  # one mail each that morning
    # The story that arrived since waits for the next run.
    send(desk, sending.run_due(desk.Session, desk.settings, slot + timedelta(days=1)))
    with transaction(desk.Session) as session:
        last = session.scalars(select(Edition).order_by(Edition.id.desc())).first()
        assert [i.article.title for i in last.items] == ["Arrived later"] and last.slot == slot + timedelta(days=1)


class PausingTransport:
    """Passes messages to the real SMTP transport; after `after` of them, runs `then` (an editor's click)."""

    def __init__(self, inner, after: int, then):
        self.inner, self.after, self.then, self.sent = inner, after, then, 0

    def connect(self):
        outer = self

        class Wrapped:
            def __init__(self):
                self.cm = outer.inner.connect()

            def __enter__(self):
                connection = self.cm.__enter__()

                class Counting:
                    def send(self, message, before_end=None, while_waiting=None):
                        reply = connection.send(message, before_end, while_waiting)
                        outer.sent += 1
                        if outer.sent == outer.after:
                            outer.then()
                        return reply
                return Counting()

            def __exit__(self, *exc):
                return self.cm.__exit__(*exc)

        return Wrapped()


def test_pausing_mid_send_stops_within_a_few_messages_and_resume_sends_the_rest_once(desk, make_settings):
    newsletter_id = newsletter(desk, readers=60)
    with transaction(desk.Session) as session:
        story(session, "Big news")
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
    edition_id = cut.edition.id

    def pause():
        with transaction(desk.Session) as session:
            editions.pause(session, session.get(Edition, edition_id))

    # One batch of all 60, so the pause lands in the middle of a batch in hand.
    transport = PausingTransport(desk.transport, after=10, then=pause)
    ids = [lo for _, lo, _ in cut.batches] + [hi for _, _, hi in cut.batches]
    send_batch(desk.Session, desk.settings, transport, edition_id, min(ids), max(ids), token="w1")
    got = len(desk.smtp.messages)
    assert got < 60 and got <= 10 + CHECK_EVERY
    with transaction(desk.Session) as session:
        assert deliveries.counts(session, edition_id) == {"sent": got, "pending": 60 - got}
        batches = sending.resume(session, session.get(Edition, edition_id), desk.settings)
    send(desk, batches)
    assert received_by(desk) == sorted(f"reader{i}@example.com" for i in range(60))  # each exactly once
    with transaction(desk.Session) as session:
        assert session.get(Edition, edition_id).status == "sent"


def test_a_paused_scheduled_edition_waits_past_its_time_until_resumed(desk):
    newsletter_id = newsletter(desk, cron=None)
    with transaction(desk.Session) as session:
        story(session, "Held")
        made = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings)
        editions.schedule(session, made, datetime.now(UTC) + timedelta(minutes=1))
        editions.pause(session, made)
    later = datetime.now(UTC) + timedelta(minutes=2)  # past its time
    assert sending.run_due(desk.Session, desk.settings, later) == []
    with transaction(desk.Session) as session:
        sending.resume(session, session.get(Edition, made.id), desk.settings)
        assert session.get(Edition, made.id).status == "scheduled"
    send(desk, sending.run_due(desk.Session, desk.settings, later))
    assert len(received_by(desk)) == 3


def test_cancelling_frees_unsent_stories_and_mid_send_skips_the_rest(desk):
    newsletter_id = newsletter(desk, readers=30, cron=None)
    with transaction(desk.Session) as session:
        story(session, "Never mind")
        made = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings)
        editions.cancel(session, made)
        assert made.status == "cancelled" and "next edition" in made.note
        assert not session.scalar(select(func.count()).select_from(EditionArticle))
        with pytest.raises(InvalidInput, match="cancelled"):
            editions.schedule(session, made, datetime.now(UTC))
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
        assert [i.article.title for i in cut.edition.items] == ["Never mind"]
    edition_id = cut.edition.id

    def cancel():
        with transaction(desk.Session) as session:
            editions.cancel(session, session.get(Edition, edition_id))

    transport = PausingTransport(desk.transport, after=5, then=cancel)
    for _, lo, hi in cut.batches:
        send_batch(desk.Session, desk.settings, transport, edition_id, lo, hi, token=f"c{lo}")
    with transaction(desk.Session) as session:
        counts = deliveries.counts(session, edition_id)
        assert counts["sent"] == len(desk.smtp.messages) < 30
        assert counts["sent"] + counts["skipped"] == 30
        assert "recipients got it" in session.get(Edition, edition_id).note


def test_resend_failed_goes_to_the_failed_recipients_only(desk):
    newsletter_id = newsletter(desk, readers=4)
    with transaction(desk.Session) as session:
        story(session, "Story")
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
    desk.smtp.replies["reader1@example.com"] = "550 5.1.1 no such user"  # a hard bounce
    desk.smtp.data_reply = None
    flaky = {"reader2@example.com", "reader3@example.com"}

    class Refusing:
        """Refuses two recipients' message once, as a content filter might (554 at DATA)."""

        def __init__(self, inner):
            self.inner = inner

        def connect(self):
            from contextlib import contextmanager

            from syndicate.errors import TransportError

            @contextmanager
            def wrapped():
                with self.inner.connect() as connection:
                    class Picky:
                        def send(self, message, before_end=None, while_waiting=None):
                            if message.recipient in flaky:
                                raise TransportError("554 5.7.1 message refused", permanent=True, code=554)
                            return connection.send(message, before_end, while_waiting)
                    yield Picky()
            return wrapped()

    for edition_id, lo, hi in cut.batches:
        send_batch(desk.Session, desk.settings, Refusing(desk.transport), edition_id, lo, hi, "a")
    with transaction(desk.Session) as session:
        deliveries.requeue(session, desk.settings, datetime.now(UTC))
        assert deliveries.counts(session, cut.edition.id) == {"sent": 1, "failed": 3}
        bounced = session.scalar(select(Subscriber).where(Subscriber.email == "reader1@example.com"))
        assert bounced.status == "bounced"  # the 5xx to the address itself suppressed it
        batches, left_out = sending.resend_failed(session, session.get(Edition, cut.edition.id), desk.settings)
        assert left_out == 1
    send(desk, batches)
    assert received_by(desk) == ["reader0@example.com", "reader2@example.com", "reader3@example.com"]
    with transaction(desk.Session) as session:
        report = deliveries.report(session, session.get(Edition, cut.edition.id))
        assert report["sent"] == 3 and report["failed"] == 1 and report["bounced"] == 1


@pytest.mark.parametrize("how", ["unsubscribes", "is erased"])
def test_a_reader_who_leaves_during_the_batch_in_hand_gets_nothing(desk, how):
    """Honoured even mid-batch. Erasing a reader cuts their deliveries from them (subscriber_id NULL): the batch,
    which read their address when it began, must see that their row's reader is gone, not look for the reader
    by a number now NULL."""
    newsletter_id = newsletter(desk, readers=60)
    with transaction(desk.Session) as session:
        story(session, "Story")
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
        leaver = session.scalar(select(Subscriber.id).where(Subscriber.email == "reader50@example.com"))

    def leave():
        with transaction(desk.Session) as session:
            if how == "unsubscribes":
                consent.unsubscribe(session, desk.settings,
                                    tokens.unsubscribe_token(desk.settings.secret_key, leaver, newsletter_id))
            else:
                rights.erase(session, session.get(Subscriber, leaver), by="reader")

    ids = [b[1] for b in cut.batches] + [b[2] for b in cut.batches]
    send_batch(desk.Session, desk.settings, PausingTransport(desk.transport, 3, leave),
               cut.edition.id, min(ids), max(ids), token="w")
    assert "reader50@example.com" not in received_by(desk) and len(received_by(desk)) == 59
    with transaction(desk.Session) as session:
        assert deliveries.report(session, session.get(Edition, cut.edition.id))["skipped"] == 1


def test_a_reader_deleted_outside_syndicate_before_the_batch_leaves_no_row_sending(desk):
    """A subscriber row deleted by SQL (an admin, a retention script) leaves its deliveries naming nobody. The
    batch that claims such a row must settle it, not leave it "sending": a claim no one settles is revived,
    claimed and left again, and the edition never closes."""
    newsletter_id = newsletter(desk, readers=5)
    with transaction(desk.Session) as session:
        story(session, "Story")
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
        session.execute(delete(Subscriber).where(Subscriber.email == "reader2@example.com"))
    send(desk, cut.batches)
    assert received_by(desk) == [f"reader{i}@example.com" for i in (0, 1, 3, 4)]
    with transaction(desk.Session) as session:
        assert deliveries.counts(session, cut.edition.id) == {"sent": 4, "skipped": 1}
        orphan = session.scalar(select(Delivery).where(Delivery.subscriber_id.is_(None)))
        assert (orphan.status, orphan.claimed_by, orphan.last_reply) == ("skipped", None, "deleted before sending")
        assert session.get(Edition, cut.edition.id).status == "sent"


def test_a_test_send_reaches_the_given_addresses_marked_and_uncounted(desk):
    newsletter_id = newsletter(desk, cron=None)
    with transaction(desk.Session) as session:
        story(session, "Check me")
        made = editions.create_edition(session, session.get(Newsletter, newsletter_id), desk.settings)
        messages = proofs(desk.settings, made.newsletter, made, ["editor@example.com"])
    with desk.transport.connect() as connection:
        for message in messages:
            connection.send(message)
    (received,) = desk.smtp.messages
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert received.recipients == ["editor@example.com"]
    assert parsed["Subject"] == "[Test] Check me" and parsed["X-Syndicate-Test"]
    assert parsed["List-Unsubscribe"] is None
    body = parsed.get_body(("html",)).get_content() + parsed.get_body(("plain",)).get_content()
    assert "syndicate.invalid" not in body and "/u/" not in body and "/p/" not in body
    with transaction(desk.Session) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert session.get(Edition, made.id).status == "draft"


def test_a_long_send_is_not_queued_again_while_it_moves_but_a_stalled_one_is(desk):
    newsletter_id = newsletter(desk, readers=30)
    with transaction(desk.Session) as session:
        story(session, "Story")
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), desk.settings)
    (edition_id, lo, hi), *queued = cut.batches
    send_batch(desk.Session, desk.settings, desk.transport, edition_id, lo, hi, token="first")
    later = datetime.now(UTC) + Leases().requeue + timedelta(seconds=1)
    with transaction(desk.Session) as session:
        # A worker claimed a batch a minute ago: the edition moves, its other batches are only waiting.
        session.query(Delivery).filter(Delivery.id == lo).update({"claimed_at": later - timedelta(minutes=1)})
        assert deliveries.requeue(session, desk.settings, later) == []
    much_later = later + Leases().requeue
    with transaction(desk.Session) as session:
        # Nothing claimed for REQUEUE_AFTER: those tasks were lost; their rows get new ones.
        assert deliveries.requeue(session, desk.settings, much_later) == queued
