"""Bounces and complaints: SMTP failures at send, Amazon SES through SNS, and the generic webhook."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
import requests
import responses
import respx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from conftest import configured
from syndicate import throttle
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.delivery.copies import MessageFactory
from syndicate.errors import InvalidInput
from syndicate.http import api_tokens
from syndicate.ingest import feeds
from syndicate.mail.message import message_id as make_message_id
from syndicate.models import Delivery, Edition, Newsletter, Subscriber, SubscriberEvent, Subscription
from syndicate.newsletters import lists
from syndicate.subscribers import amazon_sns as sns_signature
from syndicate.subscribers import bounces, consent
from syndicate.web.app import create_app

TOPIC = "arn:aws:sns:eu-west-1:123456789012:syndicate-feedback"
SUBSCRIBE_URL = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + TOPIC +
                 "&Token=2336412f37fb687f5d51e6e2425c464de12884c50c2c6d8bb7e4f64c2d0a4f1dd3ed20b7fdb1f8a5a4b")
FEEDBACK_ID = "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000"
SES_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
SNS_MESSAGE_ID = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"
CONFIRMED_XML = (b'<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                 b"<ConfirmSubscriptionResult><SubscriptionArn>" + TOPIC.encode() +
                 b":2bcfbf39-05c3-41de-beaa-fcfcc21c8f55</SubscriptionArn></ConfirmSubscriptionResult>"
                 b"</ConfirmSubscriptionResponse>")
T0 = datetime(2026, 5, 1, 7, 0, tzinfo=UTC)
SIGNING_CERT_URL = ("https://sns.eu-west-1.amazonaws.com/"
                    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem")


# ── Amazon SNS's signature, made as AWS documents it, with a key of our own ──


@cache
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_pem(key: rsa.RSAPrivateKey) -> bytes:
    """A self-signed certificate for `key`, shaped like the one SNS serves at a SigningCertURL."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.now(UTC) - timedelta(days=1))  # valid whenever the test runs
            .not_valid_after(datetime.now(UTC) + timedelta(days=365)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def string_to_sign(message: dict) -> bytes:
    # https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html, written out here
    # rather than taken from syndicate.sns, so a mistake there can't agree with itself.
    if message["Type"] == "Notification":
        names = ["Message", "MessageId"] + (["Subject"] if "Subject" in message else []) + [
            "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{name}\n{message[name]}\n" for name in names).encode()


def signed(message: dict, version: str = "1", key: rsa.RSAPrivateKey | None = None) -> dict:
    message = {**message, "SignatureVersion": version}
    digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}[version]
    signature = (key or signing_key()).sign(string_to_sign(message), padding.PKCS1v15(), digest)
    return message | {"Signature": base64.b64encode(signature).decode()}


@pytest.fixture(autouse=True)
def sns_certificate():
    """Amazon SNS's host serving the signing certificate, as the guarded fetcher sees it; nothing else
    answers (respx refuses any other request), and no certificate is remembered from another test."""
    sns_signature.forget_keys()
    with respx.mock(assert_all_called=False) as router:
        router.get(SIGNING_CERT_URL).respond(200, content=certificate_pem(signing_key()),
                                             headers={"Content-Type": "application/x-x509-ca-cert"})
        yield router
    sns_signature.forget_keys()


# ── payloads, shaped as AWS documents them ───────────────────────────────────


def ses_mail(email: str, message_id: str | None = None, in_common_headers: bool = True) -> dict:
    headers = [{"name": "From", "value": "Daily <news@example.com>"}, {"name": "To", "value": email},
               {"name": "Subject", "value": "Harbour reopens after repairs"}, {"name": "MIME-Version", "value": "1.0"}]
    common = {"from": ["Daily <news@example.com>"], "to": [email], "subject": "Harbour reopens after repairs"}
    if message_id:
        headers.append({"name": "Message-ID", "value": message_id})
        if in_common_headers:
            common["messageId"] = message_id
    return {"timestamp": "2026-05-01T07:00:02.012Z", "source": "Daily <news@example.com>",
            "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.com", "sourceIp": "192.0.2.10",
            "sendingAccountId": "123456789012", "messageId": SES_MESSAGE_ID, "destination": [email],
            "headersTruncated": False, "headers": headers, "commonHeaders": common}


def ses_bounce(email: str, bounce_type: str = "Permanent", subtype: str = "General",
               diagnostic: str = "smtp; 550 5.1.1 user unknown", feedback_id: str | None = FEEDBACK_ID,
               message_id: str | None = None, form: str = "notificationType", **mail) -> dict:
    bounce = {"bounceType": bounce_type, "bounceSubType": subtype,
              "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1",
                                     "diagnosticCode": diagnostic}],
              "timestamp": "2026-05-01T07:00:03.669Z", "remoteMtaIp": "198.51.100.7",
              "reportingMTA": "dsn; a8-30.smtp-out.eu-west-1.amazonses.com"}
    if feedback_id:
        bounce["feedbackId"] = feedback_id
    return {form: "Bounce", "bounce": bounce, "mail": ses_mail(email, message_id, **mail)}


def ses_complaint(email: str, feedback_type: str | None = "abuse", feedback_id: str = FEEDBACK_ID) -> dict:
    complaint = {"userAgent": "Yahoo!-Mail-Feedback/2.0", "complainedRecipients": [{"emailAddress": email}],
                 "arrivalDate": "2026-05-01T07:12:01.000Z", "timestamp": "2026-05-01T07:13:00.000Z",
                 "feedbackId": feedback_id}
    if feedback_type:
        complaint["complaintFeedbackType"] = feedback_type
    return {"notificationType": "Complaint", "complaint": complaint, "mail": ses_mail(email)}


def sns(message, message_id: str = SNS_MESSAGE_ID, version: str = "1") -> dict:
    """An SNS Notification carrying `message`, signed."""
    return signed({
        "Type": "Notification", "MessageId": message_id, "TopicArn": TOPIC,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2026-05-01T07:00:04.000Z", "SigningCertURL": SIGNING_CERT_URL,
        "UnsubscribeURL": f"https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:1"},
        version)


def sns_confirmation(url: str = SUBSCRIBE_URL, kind: str = "SubscriptionConfirmation") -> dict:
    """An SNS SubscriptionConfirmation (or UnsubscribeConfirmation), signed."""
    return signed({
        "Type": kind, "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425c464de12884c50c2c6d8bb7e4f64c2d0a4f1dd3ed20b7fdb1f8a5a4b",
        "TopicArn": TOPIC, "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the "
        "subscription, visit the SubscribeURL included in this message.", "SubscribeURL": url,
        "Timestamp": "2026-05-01T06:00:00.000Z", "SigningCertURL": SIGNING_CERT_URL})


def sns_headers(payload: dict) -> dict:
    return {"x-amz-sns-message-type": payload["Type"], "x-amz-sns-message-id": payload["MessageId"],
            "x-amz-sns-topic-arn": TOPIC, "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": "Amazon Simple Notification Service Agent"}


# ── a newsletter with readers and an edition on its way ──────────────────────


@dataclass
class Newsroom:
    readers: dict[str, int]  # email → subscriber id
    daily: dict[str, int]  # email → delivery id of the daily edition
    weekly: dict[str, int]  # email → delivery id of the weekly edition
    message_ids: dict[str, str]  # email → Message-ID of their daily mail
    daily_id: int


@pytest.fixture
def newsroom(svc, sample_feed) -> Newsroom:
    """Two newsletters, three confirmed readers of both, and one edition of each cut: deliveries pending."""
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, max_age_hours=0,
                                     slug="daily", name="Daily", from_address="news@example.com")
        weekly = lists.add_newsletter(session, max_age_hours=0,
                                      slug="weekly", name="Weekly", from_address="news@example.com")
        readers = {}
        for name in ("ana", "ben", "cleo"):
            signup = consent.subscribe(session, f"{name}@example.com", [daily.id, weekly.id], confirmed=True)
            readers[signup.subscriber.email] = signup.subscriber.id
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        cuts = {n.slug: sending.cut(session, n, svc.settings) for n in (daily, weekly)}
        by_edition = {}
        message_ids = {}
        for slug, cut in cuts.items():
            rows = session.execute(select(Delivery, Subscriber).join(Subscriber)
                                   .where(Delivery.edition_id == cut.edition.id)).all()
            by_edition[slug] = {subscriber.email: delivery.id for delivery, subscriber in rows}
            if slug == "daily":
                make = MessageFactory(svc.settings, daily, cut.edition)
                message_ids = {s.email: make(d.id, s.id, s.email, s.name).message_id for d, s in rows}
        return Newsroom(readers, by_edition["daily"], by_edition["weekly"], message_ids, daily.id)


@pytest.fixture
def token(svc) -> str:
    with transaction(svc.Session) as session:
        return api_tokens.create_token(session, "ses", scopes=["events:bounces"])[1]


@pytest.fixture
def client(svc):
    with TestClient(create_app()) as client:
        yield client


def post(client, payload, token: str | None = None, *, basic: bool = False, headers: dict | None = None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = dict(headers or {"Content-Type": "application/json"})
    if token and basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"sns:{token}".encode()).decode()
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/api/events/bounces", content=body, headers=headers)


def status(svc, email: str) -> str:
    with transaction(svc.Session) as session:
        return session.scalar(select(Subscriber.status).where(Subscriber.email == email))


def subscription_statuses(svc, email: str) -> list[str]:
    with transaction(svc.Session) as session:
        return sorted(session.scalars(select(Subscription.status).join(Subscriber).where(Subscriber.email == email)))


def delivery_statuses(svc, *ids: int) -> list[str]:
    with transaction(svc.Session) as session:
        return [session.get(Delivery, i).status for i in ids]


def events(svc, email: str) -> list[SubscriberEvent]:
    """The subscriber's bounces, soft bounces and complaints, oldest first."""
    with transaction(svc.Session) as session:
        return list(session.scalars(
            select(SubscriberEvent).join(Subscriber, SubscriberEvent.subscriber_id == Subscriber.id)
            .where(Subscriber.email == email, SubscriberEvent.kind.in_(("bounce", "soft_bounce", "complaint")))
            .order_by(SubscriberEvent.id)))


def handle(svc, payload, headers: dict | None = None, now: datetime | None = None) -> bounces.Result:
    with transaction(svc.Session) as session:
        return bounces.handle(session, svc.settings, json.dumps(payload).encode(), headers or {}, now=now)


def fail(svc, newsroom: Newsroom, email: str, reply: str, hard: bool, now: datetime) -> str | None:
    with transaction(svc.Session) as session:
        return bounces.record_delivery_failure(
            session, svc.settings, subscriber_id=newsroom.readers[email], delivery_id=newsroom.daily[email],
            newsletter_id=newsroom.daily_id, reply=reply, hard=hard, now=now)


# ── SES through SNS ──────────────────────────────────────────────────────────


def test_a_permanent_ses_bounce_suppresses_the_address_and_skips_its_pending_deliveries(svc, client, token,
                                                                                        newsroom):
    payload = sns(ses_bounce("ana@example.com", message_id=newsroom.message_ids["ana@example.com"]))

    response = post(client, payload, token, headers=sns_headers(payload))

    assert response.status_code == 200, response.text
    assert response.json() == {"processed": 1, "ignored": 0, "duplicates": 0, "suppressed": 1, "rejected": [],
                               "topic": TOPIC}
    assert status(svc, "ana@example.com") == "bounced"
    assert subscription_statuses(svc, "ana@example.com") == ["active", "active"]  # kept, in case it's restored
    ana = [newsroom.daily["ana@example.com"], newsroom.weekly["ana@example.com"]]
    assert delivery_statuses(svc, *ana) == ["skipped", "skipped"]
    others = [newsroom.daily["ben@example.com"], newsroom.weekly["cleo@example.com"]]
    assert delivery_statuses(svc, *others) == ["pending", "pending"]
    [event] = events(svc, "ana@example.com")
    assert (event.kind, event.source, event.source_id) == ("bounce", "ses", f"ses:{FEEDBACK_ID}:ana@example.com")
    assert event.detail == "SES Permanent bounce (General): smtp; 550 5.1.1 user unknown"
    assert event.delivery_id == newsroom.daily["ana@example.com"]  # linked by our Message-ID


def test_transient_bounces_suppress_an_address_only_at_the_limit(svc, client, token, newsroom):
    def transient(n: int):
        payload = sns(ses_bounce("ben@example.com", "Transient", "MailboxFull", "smtp; 452 4.2.2 mailbox full",
                                 feedback_id=f"0100018f-transient-{n}", form="eventType"), message_id=f"sns-{n}")
        return post(client, payload, token, headers=sns_headers(payload)).json()

    assert [transient(1)["processed"], transient(2)["suppressed"]] == [1, 0]
    assert status(svc, "ben@example.com") == "confirmed"
    assert delivery_statuses(svc, newsroom.daily["ben@example.com"]) == ["pending"]

    third = transient(3)

    assert (third["processed"], third["suppressed"]) == (1, 1)
    assert status(svc, "ben@example.com") == "bounced"
    assert delivery_statuses(svc, newsroom.daily["ben@example.com"]) == ["skipped"]
    kinds = [(e.kind, e.detail) for e in events(svc, "ben@example.com")]
    assert [k for k, _ in kinds] == ["soft_bounce", "soft_bounce", "soft_bounce", "bounce"]
    assert kinds[-1][1] == ("3 soft bounces in 30 days; last: SES Transient bounce (MailboxFull): "
                            "smtp; 452 4.2.2 mailbox full")


def test_an_undetermined_bounce_counts_as_soft(svc, newsroom):
    result = handle(svc, ses_bounce("ben@example.com", "Undetermined", "Undetermined", ""))

    assert result.processed == 1 and result.suppressed == 0
    assert [e.kind for e in events(svc, "ben@example.com")] == ["soft_bounce"]
    assert status(svc, "ben@example.com") == "confirmed"


def test_a_complaint_unsubscribes_from_everything_and_skips_open_deliveries(svc, client, token, newsroom):
    payload = sns(ses_complaint("cleo@example.com"))

    response = post(client, payload, token, headers=sns_headers(payload))

    assert response.status_code == 200
    assert response.json()["suppressed"] == 1
    assert status(svc, "cleo@example.com") == "complained"
    assert subscription_statuses(svc, "cleo@example.com") == ["unsubscribed", "unsubscribed"]
    cleo = [newsroom.daily["cleo@example.com"], newsroom.weekly["cleo@example.com"]]
    assert delivery_statuses(svc, *cleo) == ["skipped", "skipped"]
    [event] = events(svc, "cleo@example.com")
    assert (event.kind, event.source, event.detail) == ("complaint", "ses", "SES complaint (abuse)")
    assert subscription_statuses(svc, "ana@example.com") == ["active", "active"]


def test_the_same_notification_twice_is_a_duplicate_and_changes_nothing(svc, client, token, newsroom):
    payload = sns(ses_complaint("cleo@example.com"))
    assert post(client, payload, token).json()["processed"] == 1
    with transaction(svc.Session) as session:  # an editor restores the address in between
        session.execute(update(Subscriber).where(Subscriber.email == "cleo@example.com").values(status="confirmed"))

    again = post(client, payload, token)

    assert again.status_code == 200
    assert (again.json()["processed"], again.json()["duplicates"]) == (0, 1)
    assert status(svc, "cleo@example.com") == "confirmed"
    assert len(events(svc, "cleo@example.com")) == 1


def test_without_a_feedback_id_the_sns_message_id_makes_a_notification_unique(svc, newsroom):
    payload = sns(ses_bounce("ben@example.com", "Transient", feedback_id=None), message_id="sns-retry-1")

    first, again = handle(svc, payload), handle(svc, payload)

    assert (first.processed, again.duplicates) == (1, 1)
    [event] = events(svc, "ben@example.com")
    assert event.source_id == "sns:sns-retry-1:ben@example.com"


def test_an_unknown_address_is_ignored_not_an_error(svc, client, token, newsroom):
    payload = sns(ses_bounce("stranger@example.org"))

    response = post(client, payload, token)

    assert response.status_code == 200
    assert (response.json()["processed"], response.json()["ignored"]) == (0, 1)


def test_it_reads_an_ses_notification_posted_without_the_sns_envelope(svc, client, token, newsroom):
    response = post(client, ses_bounce("ana@example.com", form="eventType"), token)

    assert response.json()["suppressed"] == 1
    assert status(svc, "ana@example.com") == "bounced"


@pytest.mark.parametrize("message", [
    {"notificationType": "Delivery", "mail": ses_mail("ana@example.com"),
     "delivery": {"timestamp": "2026-05-01T07:00:03.000Z", "processingTimeMillis": 546,
                  "recipients": ["ana@example.com"], "smtpResponse": "250 ok: Message 64111812 accepted",
                  "reportingMTA": "a8-70.smtp-out.eu-west-1.amazonses.com", "remoteMtaIp": "198.51.100.7"}},
    "Successfully validated SNS topic for Amazon SES event publishing.",
])
def test_it_ignores_notifications_that_are_not_bounces_or_complaints(svc, newsroom, message):
    result = handle(svc, sns(message))

    assert (result.processed, result.ignored) == (0, 1)
    assert status(svc, "ana@example.com") == "confirmed" and events(svc, "ana@example.com") == []


# ── linking an event to the delivery it is about ─────────────────────────────


@pytest.mark.parametrize("whose, in_common_headers, secret, linked", [
    ("ana@example.com", True, None, True),
    ("ana@example.com", False, None, True),  # only in mail.headers
    ("ben@example.com", True, None, False),  # another reader's mail: not ana's delivery
    ("ana@example.com", True, "another-install", False),  # same numbers, another installation
])
def test_it_links_an_event_to_the_delivery_its_message_id_names(svc, newsroom, whose, in_common_headers, secret,
                                                                linked):
    message_id = newsroom.message_ids[whose]
    if secret:
        delivery_id, edition_id = (int(p) for p in message_id.strip("<").split(".")[:2])
        message_id = make_message_id("example.com", secret, delivery_id, edition_id)

    handle(svc, ses_bounce("ana@example.com", "Transient", message_id=message_id, in_common_headers=in_common_headers))

    [event] = events(svc, "ana@example.com")
    assert event.delivery_id == (newsroom.daily["ana@example.com"] if linked else None)
    assert event.newsletter_id == (newsroom.daily_id if linked else None)


# ── SNS subscription ─────────────────────────────────────────────────────────


def test_it_confirms_an_sns_subscription_by_fetching_the_subscribe_url(svc, client, token):
    payload = sns_confirmation()
    with responses.RequestsMock() as mock:
        mock.get(SUBSCRIBE_URL, body=CONFIRMED_XML, content_type="text/xml")

        response = post(client, payload, token, basic=True, headers=sns_headers(payload))

        assert [call.request.url for call in mock.calls] == [SUBSCRIBE_URL]
        assert mock.calls[0].request.req_kwargs["timeout"] == bounces.CONFIRM_TIMEOUT
    assert response.status_code == 200, response.text
    assert response.json()["subscription"] == "confirmed" and response.json()["topic"] == TOPIC


@pytest.mark.parametrize("url", [
    "https://evil.example/?Action=ConfirmSubscription",
    "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
    "https://sns.eu-west-1.amazonaws.com.evil.example/?Action=ConfirmSubscription",
    "https://sns.eu-west-1.amazonaws.com@evil.example/",
    "https://user:pw@sns.eu-west-1.amazonaws.com/",
    "https://sns.eu-west-1.amazonaws.com:8443/?Action=ConfirmSubscription",
    "https://sns.eu-west-1.amazonaws.com\\@evil.example/",
    "https://sns.eu-west-1.amazonaws.com#@evil.example/",
    "https://169.254.169.254/latest/meta-data/",
    "https://sqs.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
])
def test_it_refuses_a_subscribe_url_that_is_not_amazon_sns_without_fetching_it(svc, client, token, url):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        response = post(client, sns_confirmation(url), token)

        assert len(mock.calls) == 0
    assert response.status_code == 422
    assert "SubscribeURL" in response.json()["error"] and "nothing was fetched" in response.json()["error"]


@pytest.mark.parametrize("url", [
    SUBSCRIBE_URL,
    "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription&TopicArn=arn:aws-cn:sns:cn-north-1:1:t",
    "https://sns.us-gov-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc",
])
def test_it_accepts_amazon_sns_subscribe_urls(url):
    assert bounces.check_subscribe_url(url) == url


@pytest.mark.parametrize("answer", [
    dict(status=500, body="Internal Failure"),
    dict(status=302, headers={"Location": "https://evil.example/"}),
    dict(body=requests.ConnectTimeout("timed out")),
])
def test_a_failed_confirmation_is_said_to_the_caller_and_redirects_are_not_followed(svc, client, token, answer):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(SUBSCRIBE_URL, **answer)
        mock.get("https://evil.example/", body="followed")

        response = post(client, sns_confirmation(), token)

        assert [call.request.url for call in mock.calls] == [SUBSCRIBE_URL]
    assert response.status_code == 502
    assert "confirm" in response.json()["error"] and "subscription" not in response.json()


def test_an_unsubscribe_confirmation_is_acknowledged_and_nothing_fetched(svc, client, token):
    payload = sns_confirmation(kind="UnsubscribeConfirmation")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        response = post(client, payload, token, headers=sns_headers(payload))

        assert len(mock.calls) == 0
    assert response.status_code == 200
    assert response.json()["subscription"] == "unsubscribe acknowledged"


# ── the generic shape ────────────────────────────────────────────────────────


def test_it_processes_generic_events_and_rejects_a_bad_one_with_why(svc, client, token, newsroom):
    payload = {"events": [
        {"type": "bounce", "email": "ANA@Example.com", "reason": "550 5.1.1 no such user", "id": "evt-1",
         "message_id": newsroom.message_ids["ana@example.com"]},
        {"type": "opened", "email": "ben@example.com", "id": "evt-2"},
        {"type": "complaint", "email": "cleo@example.com", "id": "evt-3"},
        {"type": "soft_bounce", "email": "Ben <ben@example.com>", "reason": "421 try later"},
        {"type": "bounce", "email": "stranger@example.org", "id": "evt-5"},
        {"type": "bounce"},
    ]}

    response = post(client, payload, token)

    assert response.status_code == 200
    body = response.json()
    assert (body["processed"], body["ignored"], body["suppressed"]) == (3, 1, 2)
    assert [r["index"] for r in body["rejected"]] == [1, 5]
    assert "'opened' is not one of bounce, soft_bounce, complaint" in body["rejected"][0]["reason"]
    assert "email" in body["rejected"][1]["reason"]
    assert [status(svc, e) for e in ("ana@example.com", "ben@example.com", "cleo@example.com")] == [
        "bounced", "confirmed", "complained"]
    [bounce] = events(svc, "ana@example.com")
    assert (bounce.source, bounce.source_id, bounce.detail) == ("webhook", "webhook:evt-1", "550 5.1.1 no such user")
    assert bounce.delivery_id == newsroom.daily["ana@example.com"]
    assert [(e.kind, e.source_id) for e in events(svc, "ben@example.com")] == [("soft_bounce", None)]


def test_a_single_generic_event_with_an_id_is_recorded_once(svc, client, token, newsroom):
    event = {"type": "complaint", "email": "cleo@example.com", "id": 4711}

    answers = [post(client, event, token).json() for _ in range(2)]

    assert [(a["processed"], a["duplicates"]) for a in answers] == [(1, 0), (0, 1)]
    assert [e.source_id for e in events(svc, "cleo@example.com")] == ["webhook:4711"]


# ── refusals ─────────────────────────────────────────────────────────────────


@pytest.fixture
def revoked(svc, token) -> str:
    with transaction(svc.Session) as session:
        api_tokens.revoke(session, "ses")
    return token


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer syn_never-made",
    "Basic " + base64.b64encode(b"sns:syn_never-made").decode(),
    "Basic not-base64!",
    "revoked",
])
def test_it_refuses_a_call_without_a_valid_token(svc, client, newsroom, revoked, authorization):
    if authorization == "revoked":
        authorization = f"Bearer {revoked}"
    headers = {"Authorization": authorization} if authorization else {}

    response = post(client, ses_bounce("ana@example.com"), headers=headers)

    assert response.status_code == 401
    assert "syndicate token create" in response.json()["error"]
    challenges = response.headers.get_list("www-authenticate")
    assert challenges[0] == 'Basic realm="syndicate"' and challenges[1].startswith('Bearer realm="syndicate"')
    assert status(svc, "ana@example.com") == "confirmed"


def test_it_takes_the_token_as_the_password_of_http_basic(svc, client, token, newsroom):
    response = post(client, ses_bounce("ana@example.com"), token, basic=True)

    assert response.status_code == 200
    assert status(svc, "ana@example.com") == "bounced"


def test_it_refuses_a_body_over_256_kb(svc, client, token, newsroom):
    payload = {"events": [{"type": "bounce", "email": "ana@example.com", "reason": "x" * bounces.MAX_BYTES}]}

    response = post(client, payload, token)

    assert response.status_code == 413
    assert "256 KB" in response.json()["error"]
    assert status(svc, "ana@example.com") == "confirmed"


@pytest.mark.parametrize("body, says", [
    (b'{"Type": "Notification", "Message": ', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b'[{"type": "bounce", "email": "ana@example.com"}]', "not an object"),
    (b'{"hello": "world"}', "not a shape we understand"),
    (b'{"events": {"type": "bounce"}}', '"events" must be a list'),
])
def test_it_refuses_what_it_cannot_read_and_says_which_shapes_it_understands(svc, client, token, body, says):
    response = post(client, body, token)

    assert response.status_code == 422
    assert says in response.json()["error"]
    assert "SubscriptionConfirmation" in response.json()["error"] and '"events"' in response.json()["error"]


# ── Amazon SNS's signature ───────────────────────────────────────────────────


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_notification_signed_by_sns_is_recorded_and_its_certificate_fetched_once(svc, client, token, newsroom,
                                                                                   sns_certificate, version):
    first = sns(ses_complaint("cleo@example.com"), version=version)
    second = sns(ses_bounce("ana@example.com"), message_id="another-sns-message", version=version)

    answers = [post(client, payload, token, basic=True, headers=sns_headers(payload)) for payload in (first, second)]

    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert [status(svc, e) for e in ("cleo@example.com", "ana@example.com")] == ["complained", "bounced"]
    assert [str(call.request.url) for call in sns_certificate.calls] == [SIGNING_CERT_URL]  # then kept


def tampered(payload: dict) -> dict:
    """The attack: a message SNS really signed (about a stranger), its Message swapped for a complaint."""
    return payload | {"Message": json.dumps(ses_complaint("ana@example.com"))}


def attackers_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("forge, says", [
    (lambda: tampered(sns(ses_bounce("stranger@example.org"))), "does not match its content"),
    (lambda: tampered(sns(ses_bounce("stranger@example.org"), version="2")), "does not match its content"),
    (lambda: {k: v for k, v in sns(ses_complaint("ana@example.com")).items() if k != "Signature"}, "no readable"),
    (lambda: sns(ses_complaint("ana@example.com")) | {"Signature": "EXAMPLEpH+DcEwjAPg8O9mY8"}, "does not match"),
    (lambda: signed(sns(ses_complaint("ana@example.com")), key=attackers_key()), "does not match its content"),
    (lambda: sns(ses_complaint("ana@example.com")) | {"SignatureVersion": "0"}, "SignatureVersion '0'"),
    (lambda: {k: v for k, v in sns(ses_complaint("ana@example.com")).items() if k != "SignatureVersion"},
     "SignatureVersion None"),
])
def test_a_forged_sns_complaint_suppresses_nobody(svc, client, token, newsroom, forge, says):
    payload = forge()

    response = post(client, payload, token, headers=sns_headers(payload))

    assert response.status_code == 403
    assert says in response.json()["error"] and "nothing was recorded" in response.json()["error"]
    assert status(svc, "ana@example.com") == "confirmed" and events(svc, "ana@example.com") == []
    assert delivery_statuses(svc, newsroom.daily["ana@example.com"]) == ["pending"]


@pytest.mark.parametrize("url", [
    "https://evil.example/SimpleNotificationService-1.pem",
    "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com@evil.example/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com\\@evil.example/SimpleNotificationService-1.pem",
    "https://169.254.169.254/latest/meta-data/iam/security-credentials/x.pem",
    "https://s3.amazonaws.com/attacker-bucket/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    None,
])
def test_a_signing_certificate_anywhere_but_sns_is_never_fetched(svc, client, token, newsroom, sns_certificate,
                                                                 url):
    # Signed with the attacker's key, whose certificate waits at the URL the message names.
    key = attackers_key()
    if url and url.startswith("https://evil.example/"):
        sns_certificate.get(url).respond(200, content=certificate_pem(key))
    payload = signed(sns(ses_complaint("ana@example.com")) | {"SigningCertURL": url}, key=key)

    response = post(client, payload, token)

    assert response.status_code == 403
    assert "SigningCertURL" in response.json()["error"] and "nothing was fetched" in response.json()["error"]
    assert sns_certificate.calls.call_count == 0
    assert status(svc, "ana@example.com") == "confirmed"


def test_a_subscription_confirmation_that_sns_did_not_sign_fetches_nothing(svc, client, token, sns_certificate):
    forged = sns_confirmation() | {"SubscribeURL": SUBSCRIBE_URL + "&Token=attackers-own"}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        response = post(client, forged, token, headers=sns_headers(forged))

        assert len(mock.calls) == 0
    assert response.status_code == 403 and "does not match its content" in response.json()["error"]


@pytest.mark.parametrize("answer", [
    dict(status_code=500),
    dict(status_code=302, headers={"Location": "https://evil.example/cert.pem"}),
])
def test_a_certificate_that_cannot_be_fetched_now_answers_502_so_sns_delivers_again(svc, client, token, newsroom,
                                                                                    sns_certificate, answer):
    sns_certificate.get(SIGNING_CERT_URL).respond(**answer)
    elsewhere = sns_certificate.get("https://evil.example/cert.pem").respond(200, content=b"never")
    payload = sns(ses_complaint("ana@example.com"))

    response = post(client, payload, token, headers=sns_headers(payload))

    assert response.status_code == 502 and "deliver the message again" in response.json()["error"]
    assert not elsewhere.called  # redirects are not followed
    assert status(svc, "ana@example.com") == "confirmed"


def test_a_signing_certificate_fetch_is_guarded_against_our_own_network(svc, monkeypatch, sns_certificate):
    # The guarded fetcher connects for real here, to what the SNS name resolves to: an address inside.
    sns_certificate.get(SIGNING_CERT_URL).pass_through()
    monkeypatch.setattr("socket.getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("10.0.0.7", 443))])

    with pytest.raises(sns_signature.CertificateUnavailable, match="private or local address"):
        sns_signature.verify(sns(ses_complaint("ana@example.com")))


# ── how much one token may report ────────────────────────────────────────────


def test_one_call_reporting_thousands_of_addresses_is_refused_whole(svc, client, token, newsroom):
    flood = {"events": [{"type": "complaint", "email": f"reader{n}@example.com"} for n in range(4000)]
             + [{"type": "complaint", "email": "ana@example.com"}]}

    response = post(client, flood, token)

    assert response.status_code == 413
    assert f"at most {bounces.MAX_EVENTS}" in response.json()["error"] and "smaller calls" in response.json()["error"]
    assert status(svc, "ana@example.com") == "confirmed"


def test_a_bare_ses_notification_naming_thousands_of_recipients_is_refused_whole(svc, client, token, newsroom):
    notification = ses_complaint("ana@example.com")
    notification["complaint"]["complainedRecipients"] += [
        {"emailAddress": f"reader{n}@example.com"} for n in range(4000)]

    response = post(client, notification, token)

    assert response.status_code == 413 and status(svc, "ana@example.com") == "confirmed"


def test_a_token_that_reports_more_addresses_an_hour_than_allowed_is_stopped(make_settings, tmp_path):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'own.db'}", bounce_events_per_hour=5),
                     eager=True)
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, max_age_hours=0,
                                     slug="daily", name="Daily", from_address="news@example.com")
        for n in range(12):
            consent.subscribe(session, f"reader{n}@example.com", [daily.id], confirmed=True)
        flooder = api_tokens.create_token(session, "flooder", scopes=["events:bounces"])[1]
        other = api_tokens.create_token(session, "ses", scopes=["events:bounces"])[1]

    def complaints(*numbers: int) -> dict:
        return {"events": [{"type": "complaint", "email": f"reader{n}@example.com"} for n in numbers]}

    with TestClient(create_app()) as client:
        answers = [post(client, complaints(0, 1, 2), flooder), post(client, complaints(3, 4), flooder),
                   post(client, complaints(5), flooder), post(client, complaints(6, 7), other)]

    assert [a.status_code for a in answers] == [200, 200, 429, 200]
    assert "5 addresses an hour" in answers[2].json()["error"] and "nothing of it" in answers[2].json()["error"]
    assert [status(svc, f"reader{n}@example.com") for n in range(8)] == [
        "complained"] * 5 + ["confirmed"] + ["complained"] * 2  # each token has its own count


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(0, 30), costs=st.lists(st.integers(1, 12), max_size=12))
def test_a_throttle_counting_calls_of_many_addresses_never_lets_more_than_its_limit_through(svc, limit, costs):
    key = f"property:{uuid.uuid4()}"  # hypothesis may run the same example twice: a count of its own each time
    counted = 0
    for cost in costs:
        with transaction(svc.Session) as session:
            taken = throttle.hit(session, key, limit, bounces.RATE_WINDOW, T0, cost=cost)
        assert taken == (counted + cost <= limit)  # refused only when this call would go over
        counted += cost if taken else 0
    assert counted <= limit


# ── failures at send time ────────────────────────────────────────────────────


def test_a_hard_smtp_bounce_suppresses_the_address_at_once(svc, newsroom):
    with transaction(svc.Session) as session:
        session.get(Delivery, newsroom.daily["ana@example.com"]).status = "failed"

    new_status = fail(svc, newsroom, "ana@example.com", "550 5.1.1 <ana@example.com>: user unknown", True, T0)

    assert new_status == "bounced" and status(svc, "ana@example.com") == "bounced"
    [event] = events(svc, "ana@example.com")
    assert (event.kind, event.source, event.detail) == ("bounce", "smtp", "550 5.1.1 <ana@example.com>: user unknown")
    assert event.delivery_id == newsroom.daily["ana@example.com"]
    # The failed delivery stays failed; the weekly one still waiting is skipped.
    assert delivery_statuses(svc, newsroom.daily["ana@example.com"], newsroom.weekly["ana@example.com"]) == [
        "failed", "skipped"]


def test_soft_smtp_bounces_suppress_at_the_limit(svc, newsroom):
    replies = ["452 4.2.2 mailbox full"] * 2 + ["451 4.3.0 try again later"]

    results = [fail(svc, newsroom, "ben@example.com", r, False, T0 + timedelta(days=i)) for i, r in enumerate(replies)]

    assert results == [None, None, "bounced"]
    found = events(svc, "ben@example.com")
    assert [(e.kind, e.source) for e in found] == [("soft_bounce", "smtp")] * 3 + [("bounce", "smtp")]
    assert found[0].newsletter_id == newsroom.daily_id and found[0].delivery_id == newsroom.daily["ben@example.com"]
    assert found[-1].detail == "3 soft bounces in 30 days; last: 451 4.3.0 try again later"
    assert delivery_statuses(svc, newsroom.weekly["ben@example.com"]) == ["skipped"]


def test_soft_bounces_outside_the_window_do_not_count(svc, newsroom):
    days = [0, 10, 31]  # at day 31 the first is 31 days old: two in the window

    results = [fail(svc, newsroom, "ben@example.com", "452 full", False, T0 + timedelta(days=d)) for d in days]

    assert results == [None, None, None] and status(svc, "ben@example.com") == "confirmed"
    assert fail(svc, newsroom, "ben@example.com", "452 full", False, T0 + timedelta(days=35)) == "bounced"


def test_the_limit_and_window_come_from_settings(make_settings, tmp_path):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'own.db'}", soft_bounce_limit=2,
                                   soft_bounce_window=3600))
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, max_age_hours=0,
                                          slug="daily", name="Daily", from_address="news@example.com")
        subscriber = consent.subscribe(session, "dan@example.com", [newsletter.id], confirmed=True).subscriber

    def soft(at: datetime) -> str | None:
        with transaction(svc.Session) as session:
            return bounces.soft_bounce(session, svc.settings, session.get(Subscriber, subscriber.id), "smtp", "452",
                                       now=at)[1]

    assert [soft(T0), soft(T0 + timedelta(hours=2)), soft(T0 + timedelta(hours=2, minutes=30))] == [False, False, True]
    with transaction(svc.Session) as session:
        detail = session.scalars(select(SubscriberEvent.detail).where(SubscriberEvent.kind == "bounce")).one()
    assert detail == "2 soft bounces in 1 hour; last: 452"


def test_a_late_soft_bounce_for_a_suppressed_address_is_recorded_but_suppresses_nothing_again(svc, newsroom):
    fail(svc, newsroom, "ana@example.com", "550 no such user", True, T0)

    results = [fail(svc, newsroom, "ana@example.com", "452 full", False, T0 + timedelta(hours=i)) for i in range(3)]

    assert results == [None, None, None]
    assert [e.kind for e in events(svc, "ana@example.com")] == ["bounce", "soft_bounce", "soft_bounce", "soft_bounce"]


def test_an_address_restored_after_bouncing_counts_soft_bounces_afresh(svc, newsroom):
    for i in range(3):
        fail(svc, newsroom, "ben@example.com", "452 full", False, T0 + timedelta(days=i))
    assert status(svc, "ben@example.com") == "bounced"
    with transaction(svc.Session) as session:  # an editor restores the address
        session.execute(update(Subscriber).where(Subscriber.email == "ben@example.com").values(status="confirmed"))

    again = [fail(svc, newsroom, "ben@example.com", "452 full", False, T0 + timedelta(days=3 + i)) for i in range(3)]

    assert again == [None, None, "bounced"]


def test_a_failure_for_a_deleted_subscriber_does_nothing(svc, newsroom):
    with transaction(svc.Session) as session:
        assert bounces.record_delivery_failure(session, svc.settings, subscriber_id=999_999, delivery_id=1,
                                               newsletter_id=None, reply="550", hard=True, now=T0) is None


# ── helpers ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("authorization, token", [
    ("Bearer syn_abc", "syn_abc"),
    ("bearer   syn_abc ", "syn_abc"),
    ("Basic " + base64.b64encode(b"sns:syn_abc").decode(), "syn_abc"),
    ("Basic " + base64.b64encode(b"syn_abc").decode(), None),  # the token is the password, not the user
    ("Basic %%%", None),
    ("Digest username=x", None),
    ("", None),
])
def test_it_reads_the_token_from_bearer_or_basic(authorization, token):
    assert bounces.webhook_token(authorization) == token


def test_an_overlong_provider_id_still_fits_the_column(svc, newsroom):
    result = handle(svc, {"type": "complaint", "email": "cleo@example.com", "id": "x" * 400})

    assert result.processed == 1
    [event] = events(svc, "cleo@example.com")
    assert len(event.source_id) <= 300 and event.source_id.startswith("webhook:sha256:")


def test_invalid_input_is_the_error_for_an_unknown_shape(svc):
    with transaction(svc.Session) as session, pytest.raises(InvalidInput, match="soft_bounce"):
        bounces.handle(session, svc.settings, b'{"notification": "bounce"}', {})


def test_the_fixture_cut_editions_with_pending_deliveries(svc, newsroom):
    with transaction(svc.Session) as session:
        assert session.scalar(select(Edition.status).where(Edition.newsletter_id == newsroom.daily_id)) == "sending"
        assert session.get(Newsletter, newsroom.daily_id).slug == "daily"
    assert set(delivery_statuses(svc, *newsroom.daily.values(), *newsroom.weekly.values())) == {"pending"}
    assert len(newsroom.daily) == len(newsroom.weekly) == 3



def test_a_transient_bounce_about_our_message_counts_nothing_against_the_reader(svc, newsroom):
    result = handle(svc, sns(ses_bounce("ben@example.com", "Transient", "MessageTooLarge",
                                        "smtp; 552 5.3.4 message too big")))
    assert result.ignored == 1 and result.processed == 0
    with transaction(svc.Session) as session:
        assert not session.scalars(select(SubscriberEvent).where(
            SubscriberEvent.subscriber_id == newsroom.readers["ben@example.com"])).all()
