"""Mail sent back to us, end to end: an edition goes out over real SMTP with return paths that name each
delivery; the bounce report a relay sends later, the complaint, the mailto unsubscribe come back through
`syndicate inbound process` (a pipe) and the LMTP listener, and land on the right reader's timeline."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import io
import re
import smtplib
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from conftest import SmtpHandler, configured, free_port, postfix_dsn, serve_smtp, wait_for
from syndicate import tokens
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.inbound import handling, listener
from syndicate.ingest import feeds
from syndicate.models import Article, Delivery, InboundMessage, Newsletter, Subscriber, SubscriberEvent, Subscription
from syndicate.newsletters import lists
from syndicate.subscribers import consent, timeline
from syndicate.web import metrics

READERS = ("ana@example.org", "ben@example.net", "cleo@example.com")


@pytest.fixture
def smtp():
    yield from serve_smtp(SmtpHandler())


@pytest.fixture
def env(tmp_path, smtp):
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "test-secret",
            "SYNDICATE_BASE_URL": "https://news.example", "SYNDICATE_DATABASE_URL": f"sqlite:///{tmp_path}/s.db",
            "SYNDICATE_SMTP_URL": smtp.url, "SYNDICATE_INBOUND_MAIL": "1",
            "SYNDICATE_BOUNCE_DOMAIN": "bounces.news.example"}


@pytest.fixture
def sent(env, make_settings, console, smtp, sample_feed):
    """An edition of "daily" mailed to three readers by `syndicate deliver`, as the SMTP server got it."""
    svc = configured(make_settings(**{k.removeprefix("SYNDICATE_").lower(): v for k, v in env.items()}))
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, max_age_hours=0,
                                     slug="daily", name="Daily", from_address="briefing@news.example")
        for address in READERS:
            consent.subscribe(session, address, [daily.id], confirmed=True)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        sending.cut(session, daily, svc.settings)
    code, out, err = console("deliver")
    assert code == 0, err
    assert len(smtp.messages) == 3
    return svc, {m.recipients[0]: m for m in smtp.messages}


def process(console, monkeypatch, raw: bytes, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    return console("inbound", "process", *args)


def state(svc, address: str) -> tuple[str, list[tuple[str, str, str | None]]]:
    with transaction(svc.Session) as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
        events = [(e.kind, e.source, e.detail) for e in session.scalars(
            select(SubscriberEvent).where(SubscriberEvent.subscriber_id == subscriber.id,
                                          SubscriberEvent.source == handling.SOURCE))]
        return subscriber.status, events


# ── what goes out ────────────────────────────────────────────────────────────


def test_each_delivery_goes_out_with_a_return_path_that_names_it_and_a_mailto_unsubscribe(sent):
    svc, messages = sent
    with transaction(svc.Session) as session:
        ids = dict(session.execute(select(Subscriber.email, Delivery.id).join(Delivery)).all())
    for address, received in messages.items():
        assert received.sender == tokens.return_path("test-secret", "d", ids[address], "bounces.news.example")
        assert tokens.read_return_path("test-secret", received.sender) == ("d", ids[address])
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        https, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
        assert mailto.startswith("mailto:unsubscribe@bounces.news.example?subject=unsubscribe%20")
        assert https.startswith("https://news.example/u/")
        assert message["From"].addresses[0].addr_spec == "briefing@news.example"  # From is the newsroom's


def test_without_an_inbound_path_mail_keeps_the_from_address_as_return_path_and_offers_no_mailto(
        make_settings, tmp_path, smtp, sample_feed):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path}/plain.db", smtp_url=smtp.url))
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, max_age_hours=0,
                                     slug="daily", name="Daily", from_address="briefing@news.example")
        consent.subscribe(session, "ana@example.org", [daily.id], confirmed=True)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        cut = sending.cut(session, daily, svc.settings)
    from syndicate.delivery.batches import send_batch

    for edition_id, lo, hi in cut.batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, token="t")
    [received] = smtp.messages
    assert received.sender == "briefing@news.example"
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert "mailto:" not in message["List-Unsubscribe"] and message["List-Unsubscribe"].startswith("<http://testserver/u/")


# ── a pipe from the MTA ──────────────────────────────────────────────────────


def test_a_postfix_bounce_report_piped_in_suppresses_the_reader_with_the_servers_reply(sent, console, monkeypatch):
    svc, messages = sent
    bounced = messages["ben@example.net"]
    report = postfix_dsn(bounced.sender, "ben@example.net", bounced.data)

    code, out, err = process(console, monkeypatch, report)

    assert code == 0, err
    assert out.startswith("bounce [RFC 3464] ben@example.net:")
    status, events = state(svc, "ben@example.net")
    assert status == "bounced"
    [(kind, source, detail)] = events
    assert kind == "bounce" and source == "inbound mail"
    assert "550 5.1.1" in detail and "User unknown in virtual mailbox table" in detail
    with transaction(svc.Session) as session:
        entries = timeline.timeline(session, bounced_id(svc, "ben@example.net"))
    [entry] = [e for e in entries if e.what == "bounce"]
    assert entry.detail.startswith("via inbound mail — 550 5.1.1")
    assert (entry.newsletter, entry.edition) == ("daily", 1)  # the edition the report was about
    for other in ("ana@example.org", "cleo@example.com"):
        assert state(svc, other) == ("confirmed", [])

    # The MTA delivers it again (a retry after a lost answer): nothing changes, and it says so.
    code, out, _ = process(console, monkeypatch, report)
    assert code == 0 and out.startswith("duplicate")
    assert len(state(svc, "ben@example.net")[1]) == 1


def bounced_id(svc, address: str) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(Subscriber.id).where(Subscriber.email == address))


def test_a_report_given_up_on_a_temporary_failure_counts_as_a_soft_bounce(sent, console, monkeypatch):
    svc, messages = sent
    bounced = messages["cleo@example.com"]
    report = postfix_dsn(bounced.sender, "cleo@example.com", bounced.data, status="4.2.2",
                         reply="452 4.2.2 <{r}>: Mailbox full")
    code, out, _ = process(console, monkeypatch, report)
    assert code == 0 and out.startswith("soft_bounce")
    status, [(kind, _, detail)] = state(svc, "cleo@example.com")
    assert status == "confirmed" and kind == "soft_bounce" and "Mailbox full" in detail


def test_a_delay_warning_changes_nothing(sent, console, monkeypatch):
    svc, messages = sent
    received = messages["ana@example.org"]
    report = postfix_dsn(received.sender, "ana@example.org", received.data, status="4.4.1", action="delayed",
                         reply="connect to mx.example.org[192.0.2.25]:25: Connection timed out")
    code, out, _ = process(console, monkeypatch, report)
    assert code == 0 and out.startswith("ignored [RFC 3464]") and "still trying" in out
    assert state(svc, "ana@example.org") == ("confirmed", [])


def test_a_forged_report_suppresses_no_one(sent, console, monkeypatch):
    """Someone who knows a reader's address and our return path's shape, but not our key."""
    svc, messages = sent
    received = messages["ana@example.org"]
    kind, number = tokens.read_return_path("test-secret", received.sender)
    forged = tokens.return_path("another-key", kind, number, "bounces.news.example")
    plain = postfix_dsn(forged, "ana@example.org", b"Subject: x\r\n\r\n")
    code, out, _ = process(console, monkeypatch, plain)
    assert code == 0 and out.startswith("ignored") and "names none of our mails" in out
    assert state(svc, "ana@example.org") == ("confirmed", [])
    with transaction(svc.Session) as session:
        kept = session.scalars(select(InboundMessage)).one()
        assert kept.outcome == "ignored" and kept.raw == plain  # kept for the operator to look at


def test_the_envelope_recipient_from_the_mta_is_enough(sent, console, monkeypatch):
    """A report whose headers name no return path (a relay that strips Delivered-To): the pipe's
    --recipient (Postfix: ${original_recipient}) says where it was sent."""
    svc, messages = sent
    received = messages["ana@example.org"]
    report = postfix_dsn("postmaster@news.example", "ana@example.org", b"Subject: x\r\n\r\n")
    code, out, _ = process(console, monkeypatch, report, "--recipient", received.sender)
    assert code == 0 and out.startswith("bounce")
    assert state(svc, "ana@example.org")[0] == "bounced"


def test_a_database_that_cannot_record_it_asks_the_mta_to_try_again(sent, console, monkeypatch, tmp_path):
    svc, messages = sent
    received = messages["ana@example.org"]
    monkeypatch.setenv("SYNDICATE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    code, _, err = process(console, monkeypatch, postfix_dsn(received.sender, "ana@example.org", received.data))
    assert code == 75 and "tries again" in err
    assert state(svc, "ana@example.org") == ("confirmed", [])


# ── the LMTP listener ────────────────────────────────────────────────────────


def listening(svc, lmtp: bool):
    """`syndicate inbound serve`'s listener on a free port, handling into `svc`'s database, until closed."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def handle(raw, recipients):
        return handling.receive(svc.Session, svc.settings, raw, via="lmtp", recipients=recipients).outcome

    task = loop.create_task(listener.serve(handle, "127.0.0.1", port, lmtp=lmtp, ready=lambda _: ready.set()))

    def run():
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    loop.call_soon_threadsafe(task.cancel)
    thread.join(10)


@pytest.fixture
def lmtp(sent):
    yield from listening(sent[0], lmtp=True)


@pytest.fixture
def plain_smtp(sent):
    """`syndicate inbound serve --smtp`: for an MTA or a forwarder that speaks SMTP, not LMTP."""
    yield from listening(sent[0], lmtp=False)


def greets(port: int) -> bool:
    """Whether a listener on `port` says 220 yet."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            return connection.recv(64).startswith(b"220")
    except OSError:
        return False


def lmtp_send(port: int, sender: str, recipients: list[str], raw: bytes) -> dict:
    with smtplib.LMTP("127.0.0.1", port) as client:
        return client.sendmail(sender, recipients, raw)


def test_a_bounce_report_handed_over_by_lmtp_suppresses_the_reader(sent, lmtp):
    svc, messages = sent
    bounced = messages["cleo@example.com"]
    report = postfix_dsn("ignored@news.example", "cleo@example.com", bounced.data)
    # Postfix's lmtp client: the return path as the envelope recipient, the null sender.
    assert lmtp_send(lmtp, "", [bounced.sender], report) == {}
    status, [(kind, source, detail)] = state(svc, "cleo@example.com")
    assert status == "bounced" and kind == "bounce" and "User unknown" in detail


def test_a_bounce_report_handed_over_by_plain_smtp_suppresses_the_reader(sent, plain_smtp):
    svc, messages = sent
    bounced = messages["cleo@example.com"]
    report = postfix_dsn("ignored@news.example", "cleo@example.com", bounced.data)
    with smtplib.SMTP("127.0.0.1", plain_smtp) as client:
        assert client.sendmail("", [bounced.sender], report) == {}
    status, [(kind, source, detail)] = state(svc, "cleo@example.com")
    assert status == "bounced" and kind == "bounce" and "User unknown" in detail


def test_lmtp_answers_each_recipient(sent, lmtp):
    """RFC 2033: one reply per recipient after DATA; a client waiting for the second must get it."""
    svc, messages = sent
    report = postfix_dsn(messages["ana@example.org"].sender, "ana@example.org", messages["ana@example.org"].data)
    with smtplib.LMTP("127.0.0.1", lmtp) as client:
        client.ehlo_or_helo_if_needed()
        client.mail("")
        client.rcpt(messages["ana@example.org"].sender)
        client.rcpt("postmaster@bounces.news.example")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(report.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        first, second = client.getreply(), client.getreply()
    assert first[0] == second[0] == 250
    assert state(svc, "ana@example.org")[0] == "bounced"


def test_a_message_too_big_for_a_report_is_refused_at_the_door(sent, lmtp):
    svc, _ = sent
    with smtplib.LMTP("127.0.0.1", lmtp) as client:
        client.ehlo_or_helo_if_needed()
        assert client.has_extn("size")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # SIZE= says it at MAIL
            client.sendmail("", ["bounces@bounces.news.example"], b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n",
                            mail_options=["SIZE=50000000"])
        assert refused.value.smtp_code == 552
    with smtplib.LMTP("127.0.0.1", lmtp) as client:  # and without SIZE=, when the data passes the limit
        client.ehlo_or_helo_if_needed()
        client.esmtp_features.pop("size", None)
        body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 3000
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("", ["bounces@bounces.news.example"], body)
        assert refused.value.smtp_code == 552
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(SubscriberEvent).where(
            SubscriberEvent.source == handling.SOURCE)) == 0


# ── a complaint ──────────────────────────────────────────────────────────────


def test_a_complaint_from_a_feedback_loop_stops_every_newsletter_to_the_reader(sent, console, monkeypatch):
    """Yahoo's feedback loop forwards ana's "this is spam" as an ARF report (RFC 5965) quoting our mail, to
    our return path: she is marked complained, the timeline says so, and the next edition of another
    newsletter she reads goes to the others only."""
    svc, messages = sent
    with transaction(svc.Session) as session:
        weekly = lists.add_newsletter(session, max_age_hours=0,
                                      slug="weekly", name="Weekly", from_address="briefing@news.example")
        weekly.articles_since = session.scalar(select(func.min(Article.first_seen_at)))  # the feed's stories too
        for address in READERS:
            consent.subscribe(session, address, [weekly.id], confirmed=True)
    received = messages["ana@example.org"]
    ours = email.message_from_bytes(received.data, policy=email.policy.default)
    token = re.search(r"/u/([^>]+)>", ours["List-Unsubscribe"]).group(1)
    report = ((Path(__file__).parent / "samples" / "arf-abuse-yahoo.mail").read_bytes()
              .replace(b"{RETURN_PATH}", received.sender.encode()).replace(b"{RECIPIENT}", b"ana@example.org")
              .replace(b"{MESSAGE_ID}", ours["Message-ID"].encode()).replace(b"{UNSUBSCRIBE_TOKEN}", token.encode()))

    code, out, err = process(console, monkeypatch, report)

    assert code == 0, err
    assert out.startswith("complaint [ARF") and "ana@example.org" in out
    status, [(kind, source, detail)] = state(svc, "ana@example.org")
    assert (status, kind, source) == ("complained", "complaint", "inbound mail")
    with transaction(svc.Session) as session:
        entries = timeline.timeline(session, bounced_id(svc, "ana@example.org"))
    assert any(e.what == "complaint" and e.detail.startswith("via inbound mail") for e in entries)
    with transaction(svc.Session) as session:
        cut = sending.cut(session, session.scalar(select(Newsletter).where(Newsletter.slug == "weekly")),
                          svc.settings)
        to = set(session.scalars(select(Subscriber.email).join(Delivery)
                                 .where(Delivery.edition_id == cut.edition.id)))
    assert to == {"ben@example.net", "cleo@example.com"}
    for other in ("ben@example.net", "cleo@example.com"):
        assert state(svc, other) == ("confirmed", [])


# ── the mailto unsubscribe ───────────────────────────────────────────────────


def test_the_mailto_unsubscribe_ends_that_subscription_end_to_end(sent, lmtp):
    """The reader's mail client follows List-Unsubscribe's mailto as Gmail does: a mail to the address with
    the subject the link gives, and its own body."""
    svc, messages = sent
    message = email.message_from_bytes(messages["ana@example.org"].data, policy=email.policy.default)
    mailto = re.findall(r"<(mailto:[^>]+)>", message["List-Unsubscribe"])[0]
    address, _, query = mailto.removeprefix("mailto:").partition("?")
    subject = query.removeprefix("subject=").replace("%20", " ")
    unsubscribe = (f"From: Ana <ana@example.org>\r\nTo: {address}\r\nSubject: {subject}\r\n"
                   "Message-ID: <CAF=abc@mail.gmail.com>\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
                   "This message was automatically generated by Gmail.\r\n").encode()

    assert lmtp_send(lmtp, "ana@example.org", [address], unsubscribe) == {}

    with transaction(svc.Session) as session:
        subscription = session.scalars(select(Subscription).join(Subscriber)
                                       .where(Subscriber.email == "ana@example.org")).one()
        assert subscription.status == "unsubscribed"
    status, [(kind, source, _)] = state(svc, "ana@example.org")
    assert status == "confirmed" and kind == "unsubscribed" and source == "inbound mail"


def test_an_unsubscribe_mail_without_a_valid_token_is_kept_not_obeyed(sent, console, monkeypatch):
    """The From address proves nothing: anyone can write it."""
    svc, _ = sent
    raw = (b"From: ana@example.org\r\nTo: unsubscribe@bounces.news.example\r\nSubject: unsubscribe\r\n\r\n"
           b"please take me off\r\n")
    code, out, _ = process(console, monkeypatch, raw)
    assert code == 0 and out.startswith("ignored [mailto]")
    with transaction(svc.Session) as session:
        assert session.scalar(select(Subscription.status).join(Subscriber)
                              .where(Subscriber.email == "ana@example.org")) == "active"


# ── what the operator sees ───────────────────────────────────────────────────


def test_inbound_list_and_show_tell_the_operator_what_came_and_what_was_done(sent, console, monkeypatch):
    svc, messages = sent
    bounced = messages["ben@example.net"]
    process(console, monkeypatch, postfix_dsn(bounced.sender, "ben@example.net", bounced.data))
    process(console, monkeypatch, b"From: someone@example.com\r\nSubject: hello\r\n\r\nhi\r\n")
    code, out, _ = console("inbound", "list")
    assert code == 0
    lines = out.splitlines()
    assert "OUTCOME" in lines[0] and "ignored" in lines[1] and "bounce" in lines[2] and "ben@example.net" in lines[2]
    code, out, _ = console("inbound", "show", "2", "--raw")
    assert code == 0 and "hello" in out
    code, _, err = console("inbound", "show", "1", "--raw")
    assert code == 2 and "only the bytes of messages nothing was done with are kept" in err
    with transaction(svc.Session) as session:
        scraped = metrics.render(session, svc.settings)
    assert 'syndicate_inbound_messages_24h{outcome="bounce"} 1.0' in scraped
    assert 'syndicate_inbound_messages_24h{outcome="ignored"} 1.0' in scraped


def test_only_the_newest_messages_are_kept(make_settings, tmp_path):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path}/k.db", inbound_keep=5))
    for n in range(12):
        handling.receive(svc.Session, svc.settings, f"Subject: junk {n}\r\n\r\nx\r\n".encode(), via="pipe")
    with transaction(svc.Session) as session:
        kept = session.scalars(select(InboundMessage.subject).order_by(InboundMessage.id)).all()
    assert kept == [f"junk {n}" for n in range(7, 12)]



def test_a_confirmation_mail_that_bounces_stops_mail_to_the_address(make_settings, tmp_path, smtp, console,
                                                                     monkeypatch, env):
    """A sign-up with a mistyped address: the confirmation mail's report marks it bounced, with why."""
    from syndicate import tasks

    svc = configured(make_settings(database_url=env["SYNDICATE_DATABASE_URL"], smtp_url=smtp.url,
                                   inbound_mail="1", secret_key="test-secret"))
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, max_age_hours=0,
                                     slug="daily", name="Daily", from_address="briefing@news.example")
        subscriber_id = consent.subscribe(session, "ana@gmial.com", [daily.id]).subscriber.id
    assert tasks.send_confirmation(subscriber_id).startswith("sent: 250")
    [confirmation] = smtp.messages
    assert tokens.read_return_path("test-secret", confirmation.sender) == ("c", subscriber_id)
    assert confirmation.sender.endswith("@news.example")  # no SYNDICATE_BOUNCE_DOMAIN here: the From domain

    code, out, _ = process(console, monkeypatch, postfix_dsn(confirmation.sender, "ana@gmial.com", confirmation.data))
    assert code == 0 and out.startswith("bounce")
    with transaction(svc.Session) as session:
        assert session.get(Subscriber, subscriber_id).status == "bounced"
    assert state(svc, "ana@gmial.com")[1][0][:2] == ("bounce", "inbound mail")


# ── hostile input, through the real entry point ──────────────────────────────


def _nested(depth: int) -> bytes:
    head = b"".join(f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n'.encode()
                    for n in range(depth))
    return b"Subject: nested\r\nMIME-Version: 1.0\r\n" + head + b"Content-Type: text/plain\r\n\r\nx\r\n"


def _many_parts(parts: int) -> bytes:
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(parts))
    return (b'Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' + body
            + b"--b--\r\n")


HOSTILE = {
    "50 MB": (lambda: b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 50_000, "refused", "more than a report"),
    "MIME bomb": (lambda: _many_parts(5000), "refused", "MIME"),
    "deep nesting": (lambda: _nested(3000), "refused", "MIME"),
    "non-UTF-8 headers": (lambda: b"From: \xe9\xff\xfe <x@\xc3\x28.example>\r\nSubject: \xff\xfeunsubscr\xe9\r\n"
                                  b"Content-Type: text/plain; charset=klingon\r\n\r\n\xff\xfe\r\n", "ignored", ""),
    "no body": (lambda: b"From: a@b.example\r\nSubject: headers only\r\n", "ignored", ""),
    "empty": (lambda: b"", "ignored", ""),
    "broken encoded words": (lambda: b"Subject: =?utf-8?B?////?= =?x-unknown?Q?=ZZ?=\r\n\r\nhi\r\n", "ignored", ""),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_messages_are_refused_or_ignored_with_why_and_disturb_nothing(sent, console, monkeypatch, name):
    svc, _ = sent
    make, outcome, why = HOSTILE[name]
    code, out, err = process(console, monkeypatch, make())
    assert code == 0, err
    assert out.startswith(outcome) and why in out
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(SubscriberEvent).where(
            SubscriberEvent.source == handling.SOURCE)) == 0
        assert set(session.scalars(select(Subscriber.status))) == {"confirmed"}
        kept = session.scalars(select(InboundMessage)).one()
        assert kept.outcome == outcome and kept.raw is not None and len(kept.raw) <= handling.KEEP_BYTES


def test_a_report_about_a_reader_that_is_not_ours_changes_nothing(sent, console, monkeypatch):
    """A well-made report with a genuine-looking token for a delivery that doesn't exist (deleted, or
    another installation's numbering under the same key): nothing to act on."""
    svc, _ = sent
    ghost = tokens.return_path("test-secret", "d", 999_999, "bounces.news.example")
    code, out, _ = process(console, monkeypatch, postfix_dsn(ghost, "zed@elsewhere.example", b"Subject: x\r\n\r\n"))
    assert code == 0 and out.startswith("ignored")
    assert all(state(svc, address) == ("confirmed", []) for address in READERS)


# ── the IMAP mailbox ─────────────────────────────────────────────────────────


def test_inbound_poll_reads_the_mailbox_and_a_bounce_there_suppresses_the_reader(sent, console, monkeypatch,
                                                                                 imap_server, tmp_path):
    """`syndicate inbound poll` as an operator runs it: the mailbox named by SYNDICATE_INBOUND_IMAP_URL, the
    server's certificate trusted through SSL_CERT_FILE (a CA of one's own), a report moved once handled."""
    svc, messages = sent
    bounced = messages["ben@example.net"]
    imap = imap_server.account("tls")
    imap_server.append(imap, postfix_dsn(bounced.sender, "ben@example.net", bounced.data),
                       b"From: someone@example.com\r\nSubject: Out of Office\r\nAuto-Submitted: auto-replied\r\n\r\n"
                       b"I am away.\r\n")
    ca = tmp_path / "ca.pem"
    imap_server.ca.cert_pem.write_to_path(str(ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.setenv("SYNDICATE_INBOUND_IMAP_URL", f"imaps://{quote(imap.username, safe='')}:"
                       f"{quote(imap.password, safe='')}@127.0.0.1:{imap.port}/INBOX?done=Handled")

    code, out, err = console("inbound", "poll")

    assert code == 0, err
    assert out.strip() == "2 handled from INBOX (1 bounce, 1 ignored), 0 left"
    assert state(svc, "ben@example.net")[0] == "bounced"
    assert imap_server.messages(imap) == [] and len(imap_server.messages(imap, "Handled")) == 2


def test_inbound_poll_without_a_mailbox_says_what_to_set(sent, console):
    code, _, err = console("inbound", "poll")
    assert code == 2 and "SYNDICATE_INBOUND_IMAP_URL is not set" in err


def test_beat_polls_the_mailbox_only_when_there_is_one_and_the_task_handles_what_is_there(
        sent, make_settings, env, imap_server, monkeypatch, tmp_path):
    from syndicate import tasks

    svc, messages = sent
    assert "poll-inbound" not in tasks.celery_config(svc.settings)["beat_schedule"]
    imap = imap_server.account("starttls")
    url = f"imap+starttls://{quote(imap.username, safe='')}:{quote(imap.password, safe='')}@127.0.0.1:{imap.port}/"
    settings = make_settings(**{k.removeprefix("SYNDICATE_").lower(): v for k, v in env.items()},
                             inbound_imap_url=url, inbound_poll_interval=45)
    entry = tasks.celery_config(settings)["beat_schedule"]["poll-inbound"]
    assert entry["task"] == "syndicate.poll_inbound" and entry["schedule"] == 45
    assert entry["options"]["expires"] == 45  # a poll that waited a whole interval gives way to the next
    bounced = messages["cleo@example.com"]
    imap_server.append(imap, postfix_dsn(bounced.sender, "cleo@example.com", bounced.data))
    ca = tmp_path / "ca.pem"
    imap_server.ca.cert_pem.write_to_path(str(ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    configured(settings, eager=True)

    assert tasks.poll_inbound.delay().get() == "1 handled from INBOX (1 bounce), 0 left"
    assert state(svc, "cleo@example.com")[0] == "bounced" and imap_server.messages(imap) == []


def test_syndicate_inbound_serve_takes_a_burst_of_reports_at_once(sent, env):
    """The command an operator runs, in a process of its own: a relay flushing its queue opens several
    LMTP connections at once, and each report is handled in a thread of the listener's."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from conftest import terminate

    svc, messages = sent
    port = free_port()
    child_env = {**{k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}, **env}
    server = subprocess.Popen([sys.executable, "-m", "syndicate", "inbound", "serve", "--port", str(port)],
                              env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for(lambda: greets(port) or server.poll() is not None, timeout=30, what="the listener")
        assert server.poll() is None, server.stdout.read().decode()
        reports = [(m.sender, postfix_dsn(m.sender, address, m.data)) for address, m in messages.items()]
        with ThreadPoolExecutor(len(reports)) as pool:
            answers = list(pool.map(lambda report: lmtp_send(port, "", [report[0]], report[1]), reports))
    finally:
        terminate(server, timeout=10)
    log = server.stdout.read().decode()
    assert answers == [{}] * 3, log
    assert all(state(svc, address)[0] == "bounced" for address in READERS), log
    assert "Traceback" not in log
