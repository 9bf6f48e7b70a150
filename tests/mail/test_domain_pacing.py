"""A pace per receiving domain: a 4.7.x deferral of one recipient slows that recipient's domain only
(additive increase, multiplicative decrease, shared by all workers), the other domains go on at full
pace, and the slowed domain's rows wait for its turn without holding the batch's connection.
Time is simulated (the Clock of test_pacing); nothing here asserts on wall time."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.smtp import Envelope
from test_pacing import Clock

from conftest import FIGURES, SmtpHandler, configured, serve_smtp
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending
from syndicate.delivery.batches import send_batch
from syndicate.mail import pacing
from syndicate.mail.pacing import Domains, Limits, Pacer
from syndicate.models import Article, Delivery, Subscriber
from syndicate.newsletters import lists
from syndicate.subscribers import consent

SLOWED, OTHERS = "gmail.example", ("yahoo.example", "example.org")

# ── the rule itself ──────────────────────────────────────────────────────────


def test_a_deferral_halves_the_domains_rate_and_it_grows_back_a_step_at_a_time():
    domains = Domains()
    d = pacing.slow_domain(domains, SLOWED, observed=40.0, now=100.0)
    assert (d.cap, d.ceiling, d.step) == (20.0, 80.0, 4.0)  # half of what we sent it; back up by 80/20
    # Another worker's message, sent at full pace before it heard of the cap: counted, no news about the cap.
    pacing.slow_domain(domains, SLOWED, observed=40.0, now=100.5, sent_under=None)
    assert domains.slowed[SLOWED].cap == 20.0 and domains.slowed[SLOWED].deferrals == 2
    # A message sent under the cap and deferred too: halved again, however soon.
    pacing.slow_domain(domains, SLOWED, observed=40.0, now=100.6, sent_under=100.0)
    assert domains.slowed[SLOWED].cap == 10.0 and domains.slowed[SLOWED].slowed_at == 100.6
    pacing.slow_domain(domains, SLOWED, observed=40.0, now=100.7, sent_under=100.0)  # under the previous cap
    assert domains.slowed[SLOWED].cap == 10.0
    start = 100.6
    pacing.grow(domains, start + 3 * pacing.INCREASE_EVERY)
    assert domains.slowed[SLOWED].cap == 10.0 + 3 * 4.0  # additive: one step per quiet INCREASE_EVERY
    pacing.grow(domains, start + 17 * pacing.INCREASE_EVERY)
    assert domains.slowed[SLOWED].cap == 78.0
    pacing.grow(domains, start + 18 * pacing.INCREASE_EVERY)
    assert SLOWED not in domains.slowed  # at its ceiling: the cap is lifted, full pace again


def test_a_domain_never_measured_starts_from_the_unmeasured_rate_and_never_stops():
    domains = Domains()
    assert pacing.slow_domain(domains, SLOWED, observed=None, now=0.0).cap == pacing.UNMEASURED / 2
    for i in range(1, 20):
        pacing.slow_domain(domains, SLOWED, observed=None, now=i * 0.1, sent_under=domains.slowed[SLOWED].slowed_at)
    assert domains.slowed[SLOWED].cap == pacing.MIN_RATE


def test_a_slowed_domain_has_a_bucket_of_its_own_and_the_others_none():
    domains = Domains()
    pacing.slow_domain(domains, SLOWED, observed=20.0, now=0.0)  # 10 a second from now on
    grant, wait = pacing.take_domain(domains, SLOWED, 20, 0.0)
    assert grant == 0 and wait == pytest.approx(0.1)  # the deferral emptied it
    assert pacing.take_domain(domains, SLOWED, 20, 0.55) == (5, 0.0)
    assert pacing.take_domain(domains, SLOWED, 20, 5.0) == (10, 0.0)  # at most a second's worth
    assert pacing.take_domain(domains, "yahoo.example", 20, 0.0) == (20, 0.0)


def test_the_state_survives_its_trip_through_json():
    domains = Domains()
    pacing.slow_domain(domains, SLOWED, observed=30.0, now=7.0)
    again = Domains(**json.loads(json.dumps(asdict(domains))))
    assert again == domains


# ── shared by workers ────────────────────────────────────────────────────────


class Counting:
    """A real store, counting the round trips asked of it."""

    def __init__(self, store):
        self.store, self.calls = store, 0

    def update(self, name, change, kind=pacing.State):
        self.calls += 1
        return self.store.update(name, change, kind)


def test_a_domain_slowed_by_one_worker_is_slowed_for_all_and_only_that_domain(pacing_store):
    clock = Clock()
    first, second = (Pacer(pacing_store, "smtp:mx:25", Limits(), clock=clock, sleep=clock.sleep) for _ in range(2))
    first.domains.slow_down(SLOWED)
    assert second.domains.ready(SLOWED) > 0  # no token yet: the caller defers the row, nobody sleeps
    assert all(second.domains.ready(other) == 0 for other in OTHERS)
    assert second.state().cap is None  # the stream itself goes on at full pace
    clock.sleep(1.0)  # a second's worth: UNMEASURED / 2 messages, for both workers together
    sent = 0
    for _ in range(40):
        sent += first.domains.ready(SLOWED) == 0
        sent += second.domains.ready(SLOWED) == 0
    assert sent == pacing.UNMEASURED / 2
    assert Pacer(pacing_store, "smtp:other:25", Limits(), clock=clock).domains.snapshot() == {}  # per transport


def test_messages_to_domains_not_slowed_ask_the_store_once_a_second_not_once_each(pacing_store):
    clock = Clock()
    counting = Counting(pacing_store)
    pacer = Pacer(counting, "smtp:mx:25", Limits(), clock=clock, sleep=clock.sleep)
    for i in range(3000):
        assert pacer.domains.ready(f"d{i % 300}.example") == 0
        clock.sleep(0.001)  # 3000 messages in 3 s
    assert counting.calls == 3  # one look a second at which domains are slowed


# ── in the send loop, against a real SMTP server ─────────────────────────────


class DomainThrottlingHandler(SmtpHandler):
    """Answers RCPT for one domain with a deferral while `throttling`; counts its sessions."""

    throttling, greetings = True, 0
    rcpt_reply = "450 4.7.28 rate limited, try again later"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.greetings += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope: Envelope, address, rcpt_options):
        if self.throttling and address.endswith("@" + SLOWED):
            return self.rcpt_reply
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture
def throttling_server():
    yield from serve_smtp(DomainThrottlingHandler())


def _ids_by_email(svc) -> dict[str, Delivery]:
    with transaction(svc.Session) as session:
        rows = session.execute(
            Delivery.__table__.select().join(Subscriber.__table__, Subscriber.id == Delivery.subscriber_id)
            .with_only_columns(Subscriber.email, Delivery.id, Delivery.status, Delivery.attempts,
                               Delivery.next_attempt_at, Delivery.last_reply).order_by(Delivery.id)).all()
    return {row.email: row for row in rows}


@pytest.mark.parametrize("reply", ["450 4.7.28 rate limited, try again later", "421 4.7.0 Try again later"])
def test_a_domain_deferring_at_rcpt_is_slowed_alone_and_recovers_after_it_relents(
        make_settings, tmp_path, throttling_server, reply):
    server = throttling_server
    server.rcpt_reply = reply
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'd.db'}", smtp_url=server.url,
                                   batch_size=100))
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
        for i in range(10):
            for domain in (SLOWED, *OTHERS):
                consent.subscribe(session, f"reader{i:02}@{domain}", [newsletter.id], confirmed=True)
        now = datetime.now(UTC)
        session.add(Article(identity="a", url="https://news.example/a", title="Story", content_hash="x",
                            published_at=now, first_seen_at=now))
    with transaction(svc.Session) as session:
        made = sending.cut(session, lists.get_newsletter(session, "daily"), svc.settings)
    clock = Clock()
    started = clock.now
    pacer = Pacer(pacing.DatabaseStore(svc.engine), "smtp", Limits(), clock=clock, sleep=clock.sleep)
    first_pass = datetime.now(UTC)
    for edition_id, lo, hi in made.batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, "t1",
                   clock=lambda: first_pass, pacer=pacer)

    # The other two domains went at once, in order, none of them waiting; gmail.example's rows are
    # deferred, not failed: the first one refused, the other nine held back, never tried.
    others = [f"reader{i:02}@{d}" for i in range(10) for d in OTHERS]
    assert [m.recipients[0] for m in server.messages] == others
    assert clock.now == started  # the batch never slept on the slowed domain
    rows = _ids_by_email(svc)
    with transaction(svc.Session) as session:
        assert deliveries.counts(session, made.edition.id) == {"sent": 20, "deferred": 10}
    slowed = [rows[f"reader{i:02}@{SLOWED}"] for i in range(10)]
    assert slowed[0].attempts == 1 and slowed[0].last_reply == reply
    assert all(r.attempts == 0 and r.last_reply.startswith("held back: gmail.example") for r in slowed[1:])
    # They wait in a queue of their own, spread at the domain's pace (25 a second: 0.04 s apart).
    turns = [r.next_attempt_at for r in slowed[1:]]
    assert [(b - a).total_seconds() for a, b in zip(turns, turns[1:], strict=False)] == pytest.approx([0.04] * 8)
    assert turns[0] > first_pass and slowed[0].next_attempt_at == first_pass + timedelta(
        seconds=svc.settings.retry_base)
    assert pacer.state().cap is None  # the stream was not slowed
    assert {name: d.cap for name, d in pacer.domains.snapshot().items()} == {SLOWED: pacing.UNMEASURED / 2}
    # A 421 closes the session: the batch went on over a new one. A 450 leaves it open.
    assert server.greetings == (2 if reply.startswith("421") else 1)

    # The server relents; a second later the domain's rows are due and go, each exactly once.
    server.throttling = False
    clock.sleep(1.0)
    later = first_pass + timedelta(seconds=svc.settings.retry_base)
    with transaction(svc.Session) as session:
        batches = deliveries.requeue(session, svc.settings, later)
    results = [send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, "t2",
                          clock=lambda: later, pacer=pacer) for edition_id, lo, hi in batches]
    assert sum(r.claimed for r in results) == 10 and sum(r.counts.get("sent", 0) for r in results) == 10
    received = Counter(m.recipients[0] for m in server.messages)
    assert len(received) == 30 and set(received.values()) == {1}
    assert [m.recipients[0] for m in server.messages[20:]] == [f"reader{i:02}@{SLOWED}" for i in range(10)]
    with transaction(svc.Session) as session:
        assert deliveries.counts(session, made.edition.id) == {"sent": 30}

    # Its rate comes back step by step, then the cap is lifted.
    clock.sleep(pacing.INCREASE_EVERY)
    assert pacer.domains.snapshot()[SLOWED].cap == pacing.UNMEASURED / 2 + pacing.UNMEASURED / 10
    clock.sleep(14 * pacing.INCREASE_EVERY)
    assert pacer.domains.snapshot() == {}
    FIGURES.append(
        f"domain pacing: '{reply}' at RCPT for {SLOWED} only, 30 readers on 3 domains: the 20 of the other two "
        f"sent in the first pass, 0 s waited (simulated); {SLOWED}: 1 refused + 9 held back 0.04 s apart, "
        f"deferred not failed, sent once each after it relented ({server.greetings} SMTP session(s)); its pace "
        f"{pacing.UNMEASURED / 2:g}/s, +{pacing.UNMEASURED / 10:g}/s per {pacing.INCREASE_EVERY:g} s, "
        f"full pace again {15 * pacing.INCREASE_EVERY:g} s after the deferral")


# ── what an operator sees ────────────────────────────────────────────────────


def test_syndicate_pace_shows_all_mail_and_each_slowed_domain(tmp_path):
    from click.testing import CliRunner

    from syndicate.cli.main import main
    from syndicate.config import Settings
    from syndicate.services import Services

    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s", "SYNDICATE_SEND_RATE": "40"}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    worker = Services(Settings.from_env(env))  # a worker that was told to slow down, in another process
    worker.pacer.domains.slow_down(SLOWED)
    shown = runner.invoke(main, ["pace", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    stream, domain = json.loads(shown.output)
    assert stream["to"] == "all mail (outbox)" and stream["per_second"] == 40 and stream["slowed_since"] is None
    assert domain["to"] == SLOWED and domain["per_second"] == pacing.UNMEASURED / 2 and domain["deferrals"] == 1
    assert datetime.fromisoformat(domain["full_at"]) - datetime.fromisoformat(domain["slowed_since"]) == timedelta(
        seconds=15 * pacing.INCREASE_EVERY)  # from half of 50 a second to 100, 5 a second per step
    table = runner.invoke(main, ["pace"], env=env).output
    assert SLOWED in table.splitlines()[2] and "25.0" in table


def test_metrics_give_each_slowed_domains_pace(svc):
    from starlette.testclient import TestClient

    from syndicate.http import api_tokens
    from syndicate.web.app import create_app

    svc.pacer.domains.slow_down(SLOWED)
    with transaction(svc.Session) as session:
        _, token = api_tokens.create_token(session, "prometheus", scopes=["metrics:read"])
    body = TestClient(create_app()).get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
    assert f'syndicate_domain_pace_per_second{{domain="{SLOWED}"}} 25.0\n' in body
    assert "syndicate_domains_slowed 1.0\n" in body
    # No SYNDICATE_SEND_RATE and no 421 for the session: all mail goes as fast as it goes, no sample.
    assert not [line for line in body.splitlines() if line.startswith("syndicate_send_pace_per_second")]
