"""Readers' choices through the real fan-out and a real SMTP server: each reader gets the stories of their
topics, once; a digest reader only when due, with everything since; the stories of a failed mail come
with the next one; each distinct story set is rendered once; the cursor moves only with a recorded "sent",
in its batch's fold, and in the order the outcomes happened even when a killed worker's fold comes late."""

from __future__ import annotations

import email
import email.policy
import hashlib
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select

from conftest import configured
from syndicate.db import transaction
from syndicate.delivery import choices, deliveries, sending
from syndicate.delivery.batches import BatchResult, TakenOver, _Ledger, claim, send_batch
from syndicate.models import Article, Delivery, Edition, EditionVariant, Newsletter, Subscriber, Subscription
from syndicate.newsletters import lists, rendering
from syndicate.subscribers import consent

# Far enough back that a 4xx answer is past the give-up period at once (Settings.give_up_after: 4 days).
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)


@pytest.fixture
def news(database_url, make_settings, smtp_server):
    return configured(make_settings(database_url=database_url, smtp_url=smtp_server.url, batch_size=3))


def newsletter(svc, readers: dict[str, dict], **options) -> int:
    """A newsletter and its readers (address → their choices), subscribed before T0."""
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                                    max_age_hours=0, **options)
        made.articles_since = T0 - timedelta(days=1)
        for address, choices in readers.items():
            join(session, made.id, address, T0 - timedelta(hours=1), **choices)
        return made.id


def join(session, newsletter_id, address, at, **choices):
    consent.subscribe(session, address, [newsletter_id], confirmed=True, now=at)
    subscription = session.scalars(select(Subscription).join(Subscriber).where(Subscriber.email == address)).one()
    for name, value in choices.items():
        setattr(subscription, name, value)


def stories(svc, at: datetime, *categories: list[str]) -> list[str]:
    """One story per category list, seen at `at`; their titles."""
    titles = []
    with transaction(svc.Session) as session:
        for i, filed in enumerate(categories):
            title = f"Story {at:%d%H%M} {i} ({'/'.join(filed) or 'none'})"
            session.add(Article(identity=title, url=f"https://example.com/{hashlib.md5(title.encode()).hexdigest()}",
                                title=title, lead="A lead.", content_hash=title, categories=filed,
                                published_at=at, first_seen_at=at))
            titles.append(title)
    return titles


def cut_and_send(svc, newsletter_id: int, at: datetime, smtp_server) -> dict[str, list[str]]:
    """An edition cut at `at` and sent; which story titles each address received in it."""
    smtp_server.messages.clear()
    with transaction(svc.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), svc.settings, now=at)
    for edition_id, lo, hi in cut.batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, f"task-{at:%d%H}")
    with transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, datetime.now(UTC))
    got = {}
    for received in smtp_server.messages:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        text = message.get_body(("plain",)).get_content()
        got[received.recipients[0]] = sorted(line.strip() for line in text.splitlines() if line.startswith("Story "))
    return got


def cursor_of(svc, address: str) -> int | None:
    with transaction(svc.Session) as session:
        return session.scalar(select(Subscription.cursor_edition_id).join(Subscriber)
                              .where(Subscriber.email == address))


def test_each_reader_gets_the_stories_of_their_topics_and_each_story_set_is_rendered_once(
        news, smtp_server, monkeypatch):
    readers = {"all@example.com": {}, "sport@example.com": dict(topics=["Sport"]),
               "sport2@example.com": dict(topics=["Sport"]), "politics@example.com": dict(topics=["Politics"]),
               "weather@example.com": dict(topics=["Weather"])}
    newsletter_id = newsletter(news, readers)
    politics, sport, both = stories(news, T0, ["Politics"], ["sport"], ["Politics", "Sport"])
    renders = []
    real = rendering.render_with_notes
    monkeypatch.setattr(rendering, "render_with_notes", lambda *a, **k: renders.append(a[3]) or real(*a, **k))

    got = cut_and_send(news, newsletter_id, T0 + timedelta(hours=1), smtp_server)

    assert got == {"all@example.com": sorted([politics, sport, both]),
                   "sport@example.com": sorted([sport, both]), "sport2@example.com": sorted([sport, both]),
                   "politics@example.com": sorted([politics, both])}
    # the edition's own render, then one per distinct set: the two sport readers share theirs
    assert len(renders) == 3
    with transaction(news.Session) as session:
        variants = {tuple(v.article_ids) for v in session.scalars(select(EditionVariant))}
        assert len(variants) == 2
        rows = dict(session.execute(select(Subscriber.email, Delivery.variant_id).join(Delivery)).all())
        edition_id = session.scalar(select(Delivery.edition_id).limit(1))
    assert rows["all@example.com"] is None and rows["sport@example.com"] == rows["sport2@example.com"] is not None
    assert "weather@example.com" not in rows  # nothing for them: no mail, and nothing missed
    assert {cursor_of(news, a) for a in readers} == {edition_id}


def test_the_stories_of_a_failed_mail_come_with_the_next_one_once(news, smtp_server):
    newsletter_id = newsletter(news, {"ok@example.com": {}, "busy@example.com": {}})
    first = stories(news, T0, ["News"])
    smtp_server.replies["busy@example.com"] = "450 4.2.1 Mailbox busy, try later"
    got = cut_and_send(news, newsletter_id, T0 + timedelta(hours=1), smtp_server)
    assert got == {"ok@example.com": first}
    with transaction(news.Session) as session:
        assert session.scalar(select(Delivery.status).join(Subscriber)
                              .where(Subscriber.email == "busy@example.com")) == "failed"  # past give-up
    assert cursor_of(news, "busy@example.com") is None

    del smtp_server.replies["busy@example.com"]
    second = stories(news, T0 + timedelta(days=1), ["News"])
    got = cut_and_send(news, newsletter_id, T0 + timedelta(days=1, hours=1), smtp_server)
    assert got == {"ok@example.com": second, "busy@example.com": sorted(first + second)}
    with transaction(news.Session) as session:  # resending the first edition's failed: they have its stories
        first_edition = session.scalars(select(Edition).order_by(Edition.id)).first()
        assert sending.resend_failed(session, first_edition, news.settings) == ([], 1)

    third = stories(news, T0 + timedelta(days=2), ["News"])
    got = cut_and_send(news, newsletter_id, T0 + timedelta(days=2, hours=1), smtp_server)
    assert got == {"ok@example.com": third, "busy@example.com": third}  # never twice


@pytest.mark.parametrize("last_reply", [
    "450 4.2.1 Mailbox busy, try later",  # given up on: recorded with the soft bounce it counts as
    "552 5.2.2 Mailbox full",  # refused for good, the address not in question (no bounce): the ledger's own write
])
def test_a_mail_still_retrying_when_the_next_edition_goes_out_and_then_failing_comes_with_the_mail_after(
        news, smtp_server, last_reply):
    """The first edition's mail to busy is deferred (4xx, within the give-up period) when the second goes
    out: its stories aren't carried into the second (it may yet arrive), and the second's "sent" moves the
    cursor past it. Failing days later, it moves the cursor back: the third mail carries the first's
    stories, and not the second's, which reached them."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    newsletter_id = newsletter(news, {"ok@example.com": {}, "busy@example.com": {}})
    first = stories(news, start, ["News"])
    smtp_server.replies["busy@example.com"] = "450 4.2.1 Mailbox busy, try later"
    assert cut_and_send(news, newsletter_id, start + timedelta(minutes=1), smtp_server) == {"ok@example.com": first}

    del smtp_server.replies["busy@example.com"]
    second = stories(news, start + timedelta(hours=1), ["News"])
    got = cut_and_send(news, newsletter_id, start + timedelta(hours=1, minutes=1), smtp_server)
    assert got == {"ok@example.com": second, "busy@example.com": second}  # the first's may yet arrive
    with transaction(news.Session) as session:
        first_id, second_id = session.scalars(select(Edition.id).order_by(Edition.id)).all()
    assert cursor_of(news, "busy@example.com") == second_id

    smtp_server.replies["busy@example.com"] = last_reply
    later = datetime.now(UTC) + timedelta(days=5)  # past the give-up period (4 days)
    with time_machine.travel(later, tick=False):
        with transaction(news.Session) as session:
            batches = deliveries.requeue(session, news.settings, later)
        assert [b[0] for b in batches] == [first_id]
        for edition_id, lo, hi in batches:
            send_batch(news.Session, news.settings, news.transport, edition_id, lo, hi, "retry")
    with transaction(news.Session) as session:
        assert session.scalar(select(Delivery.status).join(Subscriber).where(
            Subscriber.email == "busy@example.com", Delivery.edition_id == first_id)) == "failed"
    assert cursor_of(news, "busy@example.com") is None  # back before the first edition: there was none

    del smtp_server.replies["busy@example.com"]
    third = stories(news, later, ["News"])
    with time_machine.travel(later + timedelta(hours=1), tick=False):
        got = cut_and_send(news, newsletter_id, later + timedelta(hours=1), smtp_server)
    assert got == {"ok@example.com": third, "busy@example.com": sorted(first + third)}


def test_a_digest_reader_gets_one_mail_when_due_with_every_story_since(news, smtp_server):
    newsletter_id = newsletter(news, {"each@example.com": {}, "daily@example.com": dict(frequency="daily"),
                                      "weekly@example.com": dict(frequency="weekly")})
    sent = {}
    for hours in (0, 6, 21, 30, 42, 24 * 6, 24 * 7 + 1):
        at = T0 + timedelta(hours=hours)
        titles = stories(news, at, ["News"])
        sent[hours] = (titles, cut_and_send(news, newsletter_id, at + timedelta(minutes=5), smtp_server))

    def of(*hours):
        return sorted(t for h in hours for t in sent[h][0])

    assert all(got["each@example.com"] == titles for titles, got in sent.values())
    daily = {h: got.get("daily@example.com") for h, (_, got) in sent.items()}
    # at most one a day, 20 hours after the last: 6 h isn't due, 21 h carries it; 30 h isn't, 42 h is
    assert daily == {0: of(0), 6: None, 21: of(6, 21), 30: None, 42: of(30, 42), 144: of(144), 169: of(169)}
    weekly = {h: got.get("weekly@example.com") for h, (_, got) in sent.items()}
    assert weekly == {0: of(0), 6: None, 21: None, 30: None, 42: None, 144: None, 169: of(6, 21, 30, 42, 144, 169)}


def test_a_new_reader_gets_the_latest_edition_as_a_welcome_digest_only_when_the_editor_wants(news, smtp_server):
    newsletter_id = newsletter(news, {"old@example.com": {}}, welcome_digest=True)
    first = stories(news, T0, ["News"])
    cut_and_send(news, newsletter_id, T0 + timedelta(hours=1), smtp_server)
    with transaction(news.Session) as session:
        join(session, newsletter_id, "new@example.com", T0 + timedelta(hours=2))
        join(session, newsletter_id, "later@example.com", T0 + timedelta(hours=2))
        session.get(Newsletter, newsletter_id).welcome_digest = True
    second = stories(news, T0 + timedelta(days=1), ["News"])
    got = cut_and_send(news, newsletter_id, T0 + timedelta(days=1, hours=1), smtp_server)
    assert got == {"old@example.com": second, "new@example.com": sorted(first + second),
                   "later@example.com": sorted(first + second)}
    third = stories(news, T0 + timedelta(days=2), ["News"])
    got = cut_and_send(news, newsletter_id, T0 + timedelta(days=2, hours=1), smtp_server)
    assert set(map(tuple, got.values())) == {tuple(third)}  # once

    with transaction(news.Session) as session:
        session.get(Newsletter, newsletter_id).welcome_digest = False
        join(session, newsletter_id, "plain@example.com", T0 + timedelta(days=2, hours=2))
    fourth = stories(news, T0 + timedelta(days=3), ["News"])
    got = cut_and_send(news, newsletter_id, T0 + timedelta(days=3, hours=1), smtp_server)
    assert got["plain@example.com"] == fourth


def test_the_cursor_moves_only_with_a_sent_mark_that_holds(news, smtp_server):
    """A worker whose claim was taken over (it was thought dead) writes no "sent", and moves no cursor; the
    worker that took the batch over sends it, and its batch's fold moves the cursor."""
    newsletter_id = newsletter(news, {"reader@example.com": {}})
    stories(news, T0, ["News"])
    with transaction(news.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), news.settings, now=T0)
    (edition_id, lo, hi), = cut.batches
    with transaction(news.Session) as session:
        assert claim(session, edition_id, lo, hi, "dead-worker", T0) == 1
        row = session.execute(select(Delivery.id, Delivery.attempts, Delivery.subscriber_id)).one()
        session.execute(Delivery.__table__.update().values(claimed_by="new-worker"))  # taken over
    with news.Session() as session, _Ledger(session, news.settings, BatchResult()) as ledger, \
            pytest.raises(TakenOver):
        ledger.write(row, "dead-worker", "sent", "250 OK", T0)
    assert cursor_of(news, "reader@example.com") is None

    send_batch(news.Session, news.settings, news.transport, edition_id, lo, hi, "new-worker")
    assert [m.recipients for m in smtp_server.messages] == [["reader@example.com"]]
    assert cursor_of(news, "reader@example.com") == edition_id


class Killed(Exception):
    """The worker died between its batch's last outcome and its fold."""


def sent_by_a_worker_killed_before_its_fold(svc, batches, monkeypatch) -> None:
    def dies(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(choices, "fold", dies)
        for edition_id, lo, hi in batches:
            with pytest.raises(Killed):
                send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, "killed")


def test_a_batch_moves_its_readers_cursors_in_one_fold_once_it_is_done_not_with_each_sent(news, smtp_server):
    """Mid-batch, a reader's "sent" is written and their cursor hasn't moved: the "sent"'s commit writes the
    delivery only. Once the batch is done, every cursor has moved."""
    readers = [f"reader{i}@example.com" for i in range(3)]
    newsletter_id = newsletter(news, dict.fromkeys(readers, {}))
    stories(news, T0, ["News"])
    with transaction(news.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), news.settings, now=T0)
    (edition_id, lo, hi), = cut.batches
    seen = []

    class Watching:
        @contextmanager
        def connect(self):
            with news.transport.connect() as connection:
                class Connection:
                    def send(self, message, before_end=None, while_waiting=None):
                        reply = connection.send(message, before_end, while_waiting)
                        if len(smtp_server.messages) == 3:  # the first's "sent" is written by now
                            with transaction(news.Session) as session:
                                seen.extend(session.execute(
                                    select(Delivery.status, Subscription.cursor_edition_id)
                                    .join(Subscription, Subscription.subscriber_id == Delivery.subscriber_id)
                                    .where(Delivery.status == "sent")).all())
                        return reply
                yield Connection()

    send_batch(news.Session, news.settings, Watching(), edition_id, lo, hi, "task")
    assert seen and set(seen) == {("sent", None)}
    assert [cursor_of(news, a) for a in readers] == [edition_id] * 3


def test_a_failure_after_a_sent_whose_worker_died_before_its_fold_moves_the_cursor_back_all_the_same(
        news, smtp_server, monkeypatch):
    """As above, with the second edition's mail to busy sent by a worker killed before its batch's fold:
    when the first's mail fails, busy's "sent" of the second is recorded and their cursor hasn't moved.
    The failure keeps its moment, and the second edition's close, folding what the killed worker left,
    doesn't move the cursor past the first: the second started before the failure, so it didn't carry the
    first's stories. (Moved there, they would never come.)"""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    newsletter_id = newsletter(news, {"ok@example.com": {}, "busy@example.com": {}, "slow@example.com": {}})
    first = stories(news, start, ["News"])
    smtp_server.replies["busy@example.com"] = "450 4.2.1 Mailbox busy, try later"
    assert cut_and_send(news, newsletter_id, start + timedelta(minutes=1), smtp_server) == {
        "ok@example.com": first, "slow@example.com": first}  # busy's is retried

    del smtp_server.replies["busy@example.com"]
    smtp_server.replies["slow@example.com"] = "450 4.2.1 Mailbox busy, try later"  # keeps the second open
    stories(news, start + timedelta(hours=1), ["News"])
    with transaction(news.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), news.settings,
                          now=start + timedelta(hours=1, minutes=1))
    sent_by_a_worker_killed_before_its_fold(news, cut.batches, monkeypatch)
    first_id, second_id = cut.edition.id - 1, cut.edition.id
    with transaction(news.Session) as session:
        assert session.scalar(select(Delivery.status).join(Subscriber).where(
            Subscriber.email == "busy@example.com", Delivery.edition_id == second_id)) == "sent"
    assert cursor_of(news, "busy@example.com") is None

    smtp_server.replies["busy@example.com"] = "450 4.2.1 Mailbox busy, try later"  # given up on at the retry
    del smtp_server.replies["slow@example.com"]
    later = datetime.now(UTC) + timedelta(days=5)
    with time_machine.travel(later, tick=False):
        with transaction(news.Session) as session:
            batches = deliveries.requeue(session, news.settings, later)
            assert session.get(Edition, second_id).status == "sending"  # slow's mail is still open
        assert sorted(b[0] for b in batches) == [first_id, second_id]
        for edition_id, lo, hi in batches:
            send_batch(news.Session, news.settings, news.transport, edition_id, lo, hi, "retry")
        assert cursor_of(news, "busy@example.com") is None  # back before the first (there was none)
        with transaction(news.Session) as session:
            deliveries.requeue(session, news.settings, later)
            assert session.get(Edition, second_id).status == "sent"
    assert cursor_of(news, "busy@example.com") is None
    assert cursor_of(news, "slow@example.com") == second_id

    del smtp_server.replies["busy@example.com"]
    third = stories(news, later, ["News"])
    with time_machine.travel(later + timedelta(hours=1), tick=False):
        got = cut_and_send(news, newsletter_id, later + timedelta(hours=1), smtp_server)
    assert got == {"ok@example.com": third, "busy@example.com": sorted(first + third), "slow@example.com": third}


def test_a_cut_folds_what_a_killed_workers_batch_left_before_it_reads_the_cursors(news, smtp_server, monkeypatch):
    """The first edition's batch was sent by a worker killed before its fold, and the edition is still open
    (slow's mail is being retried) when the second is cut: the cut folds it first, so the readers it reached
    count as up to date, as if the worker had lived."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    newsletter_id = newsletter(news, {"a@example.com": {}, "b@example.com": {}, "slow@example.com": {}})
    stories(news, start, ["News"])
    smtp_server.replies["slow@example.com"] = "450 4.2.1 Mailbox busy, try later"
    with transaction(news.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), news.settings, now=start)
    sent_by_a_worker_killed_before_its_fold(news, cut.batches, monkeypatch)
    assert [cursor_of(news, a) for a in ("a@example.com", "b@example.com")] == [None, None]

    stories(news, start + timedelta(hours=1), ["News"])
    with transaction(news.Session) as session:
        assert session.get(Edition, cut.edition.id).status == "sending"
        sending.cut(session, session.get(Newsletter, newsletter_id), news.settings, now=start + timedelta(hours=1))
    assert [cursor_of(news, a) for a in ("a@example.com", "b@example.com", "slow@example.com")] == [
        cut.edition.id, cut.edition.id, None]


def test_a_set_longer_than_the_newsletters_max_items_shows_the_newest_and_counts_the_rest(news, smtp_server):
    newsletter_id = newsletter(news, {"ok@example.com": {}, "weekly@example.com": dict(frequency="weekly")},
                               max_items=2)
    stories(news, T0, ["News"], ["News"])
    cut_and_send(news, newsletter_id, T0 + timedelta(hours=1), smtp_server)  # both get it
    stories(news, T0 + timedelta(days=1), ["News"], ["News"])
    cut_and_send(news, newsletter_id, T0 + timedelta(days=1, hours=1), smtp_server)  # not due
    smtp_server.messages.clear()
    latest = stories(news, T0 + timedelta(days=7), ["News"], ["News"])
    with transaction(news.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), news.settings,
                          now=T0 + timedelta(days=7, hours=1))
    for edition_id, lo, hi in cut.batches:
        send_batch(news.Session, news.settings, news.transport, edition_id, lo, hi, "last")
    mails = {m.recipients[0]: email.message_from_bytes(m.data, policy=email.policy.default)
             for m in smtp_server.messages}
    text = mails["weekly@example.com"].get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert sorted(line for line in text.splitlines() if line.startswith("Story ")) == sorted(latest)
    assert "2 more stories on the web:\nhttp://testserver/n/daily" in text  # the day-1 stories, past max items
    assert "2 more stories" in mails["weekly@example.com"].get_body(("html",)).get_content()
    assert "more stories on the web" not in mails["ok@example.com"].get_body(("plain",)).get_content()


def test_a_reader_back_after_leaving_gets_what_comes_from_then_not_what_went_out_while_away(news, smtp_server):
    from syndicate.subscribers import preferences

    newsletter_id = newsletter(news, {"stays@example.com": {}, "away@example.com": {}})
    with transaction(news.Session) as session:
        away = session.scalar(select(Subscriber.id).where(Subscriber.email == "away@example.com"))
    stories(news, T0, ["News"])
    cut_and_send(news, newsletter_id, T0 + timedelta(hours=1), smtp_server)
    with transaction(news.Session) as session:
        preferences.set_preferences(session, away, [], now=T0 + timedelta(hours=2))
    while_away = stories(news, T0 + timedelta(days=1), ["News"])
    assert cut_and_send(news, newsletter_id, T0 + timedelta(days=1, hours=1), smtp_server) == {
        "stays@example.com": while_away}
    with transaction(news.Session) as session:
        preferences.set_preferences(session, away, [newsletter_id], now=T0 + timedelta(days=1, hours=2))

    back = stories(news, T0 + timedelta(days=2), ["News"])
    got = cut_and_send(news, newsletter_id, T0 + timedelta(days=2, hours=1), smtp_server)
    assert got == {"stays@example.com": back, "away@example.com": back}
