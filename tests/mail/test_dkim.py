"""DKIM: every mail syndicate sends is signed when a key is configured, and dkimpy verifies it
against the public key as DNS would publish it (no real DNS: a lookup function built from the key)."""

from __future__ import annotations

import base64
import copy
import email
import email.policy
import functools
import hashlib
import logging
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import dkim
import nacl.signing
import pytest
from dkim.canonicalization import Relaxed
from dkim.util import parse_tag_value
from hypothesis import given
from hypothesis import strategies as st

from conftest import FIGURES, configured
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.delivery.batches import send_batch
from syndicate.delivery.copies import MessageFactory, proofs
from syndicate.errors import SettingsError
from syndicate.ingest import feeds
from syndicate.mail import dkim as signing
from syndicate.mail.message import Mailbox, PreparedMessage, build_message
from syndicate.models import DEFAULT_SUBJECT, Edition, Newsletter
from syndicate.newsletters import lists
from syndicate.subscribers import consent

GOLDEN = Path(__file__).parents[1] / "golden"
# In every edition's signature: what a reader sees and what identifies the message, and the two
# unsubscribe headers, which RFC 8058 requires signed for one-click unsubscribe to count.
MUST_SIGN = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type", "list-id",
             "list-unsubscribe", "list-unsubscribe-post", "reply-to"}


# ── keys, made here with openssl and PyNaCl, and their DNS records ───────────


def openssl(*args) -> bytes:
    return subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True).stdout


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dkim-keys")
    made = {name: folder / name for name in ("rsa.pem", "rsa-pkcs1.pem", "ed25519.pem", "ed25519.key",
                                             "small.pem", "public.pem", "garbage.pem", "damaged.pem")}
    openssl("genrsa", "-out", made["rsa.pem"], 2048)
    openssl("pkey", "-in", made["rsa.pem"], "-traditional", "-out", made["rsa-pkcs1.pem"])
    openssl("genpkey", "-algorithm", "ed25519", "-out", made["ed25519.pem"])
    # dkimpy's own form, as `dknewkey --ktype ed25519` writes it: the base64 32-byte seed.
    made["ed25519.key"].write_bytes(base64.b64encode(bytes(nacl.signing.SigningKey.generate())) + b"\n")
    openssl("genrsa", "-out", made["small.pem"], 768)
    openssl("pkey", "-in", made["rsa.pem"], "-pubout", "-out", made["public.pem"])
    # A key whose structure parses but whose numbers are wrong: it signs, and nothing verifies.
    der = bytearray(openssl("pkey", "-in", made["rsa-pkcs1.pem"], "-traditional", "-outform", "DER"))
    der[-40] ^= 0x01
    made["damaged.pem"].write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\n" + base64.encodebytes(bytes(der))
                                    + b"-----END RSA PRIVATE KEY-----\n")
    made["garbage.pem"].write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n")
    assert b"BEGIN PRIVATE KEY" in made["rsa.pem"].read_bytes()  # PKCS#8, OpenSSL 3's default
    assert b"BEGIN RSA PRIVATE KEY" in made["rsa-pkcs1.pem"].read_bytes()
    return made


def published(key_file: Path) -> bytes:
    """The TXT record for the key, derived by openssl (not by the code under test)."""
    if key_file.suffix == ".key":
        seed = base64.b64decode(key_file.read_bytes())
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(nacl.signing.SigningKey(seed).verify_key))
    spki = openssl("pkey", "-in", key_file, "-pubout", "-outform", "DER")
    if b"ed25519" in openssl("pkey", "-in", key_file, "-noout", "-text").lower():
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(spki[-32:])  # RFC 8463: the raw 32 bytes
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki)


def dns(key_file: Path, selector: str = "s1", domain: str = "example.com"):
    records = {f"{selector}._domainkey.{domain}.".encode(): published(key_file)}
    return lambda name, timeout=5: records.get(name)


def verified(data: bytes, key_file: Path, **where) -> bool:
    return dkim.verify(data, dnsfunc=dns(key_file, **where))


def signature(data: bytes) -> dict[bytes, bytes]:
    headers, _ = dkim.rfc822_parse(data)
    values = [value for name, value in headers if name.lower() == b"dkim-signature"]
    assert len(values) == 1
    return parse_tag_value(re.sub(rb"\r\n", b"", values[0]))


def signed_headers(data: bytes) -> list[str]:
    return [name.strip().decode() for name in signature(data)[b"h"].split(b":")]


# ── an edition through the real path: cut, fan out, send over SMTP ───────────


@pytest.fixture
def signed_svc(make_settings, smtp_server, keys, tmp_path, request):
    key_file = keys[getattr(request, "param", "rsa.pem")]
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'test.db'}", smtp_url=smtp_server.url,
                                   dkim_key_file=key_file, dkim_selector="s1"))
    svc.key_file = key_file
    return svc


def newsroom(svc, sample_feed, readers: int = 3) -> int:
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, max_age_hours=0,
                                          slug="daily", name="Daily", from_address="news@example.com",
                                          reply_to="desk@example.com", cron="0 7 * * *", timezone="Europe/Berlin")
        for i in range(readers):
            consent.subscribe(session, f"reader{i}@example.com", [newsletter.id], confirmed=True,
                              name="Zoë Ødegård" if i == 0 else None)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        return newsletter.id


def send_edition(svc, newsletter_id: int):
    with transaction(svc.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), svc.settings)
    for edition_id, lo, hi in cut.batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, "t")
    return cut


@pytest.mark.parametrize("signed_svc", ["rsa.pem", "ed25519.pem"], indirect=True)
def test_every_edition_mail_arrives_with_a_signature_that_verifies(signed_svc, sample_feed, smtp_server):
    send_edition(signed_svc, newsroom(signed_svc, sample_feed))

    assert len(smtp_server.messages) == 3
    algorithm = b"ed25519-sha256" if "ed25519" in signed_svc.key_file.name else b"rsa-sha256"
    for received in smtp_server.messages:
        assert received.data.startswith(b"DKIM-Signature: ")
        assert verified(received.data, signed_svc.key_file)
        tags = signature(received.data)
        assert (tags[b"a"], tags[b"c"], tags[b"d"], tags[b"s"]) == (algorithm, b"relaxed/relaxed", b"example.com",
                                                                    b"s1")
        names = signed_headers(received.data)
        assert MUST_SIGN <= set(names)
        assert names.count("from") == 2  # oversigned: a From added later breaks the signature


def test_changing_the_unsubscribe_headers_or_adding_a_from_breaks_the_signature(signed_svc, sample_feed,
                                                                                smtp_server):
    send_edition(signed_svc, newsroom(signed_svc, sample_feed, readers=1))
    data = smtp_server.messages[0].data
    assert verified(data, signed_svc.key_file)
    unsubscribe = re.search(rb"List-Unsubscribe: <(https?://[^>]+)>", data).group(1)
    head, body = data.split(b"\r\n\r\n", 1)

    tampered = {
        "List-Unsubscribe pointed elsewhere": data.replace(b"List-Unsubscribe: <" + unsubscribe,
                                                           b"List-Unsubscribe: <https://evil.example/u/x"),
        "List-Unsubscribe-Post dropped": data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
        "a second List-Unsubscribe": data.replace(b"\r\nFrom: ", b"\r\nList-Unsubscribe: <https://evil.example/>"
                                                              b"\r\nFrom: ", 1),
        "a second From": data.replace(b"\r\nFrom: ", b"\r\nFrom: Bank <alerts@bank.example>\r\nFrom: ", 1),
        "a link in the body": head + b"\r\n\r\n" + body.replace(b'href=3D"http', b'href=3D"https://evil.example/?', 1),
    }
    for what, message in tampered.items():
        assert message != data, what
        assert not verified(message, signed_svc.key_file), what
    # Whitespace that relaxed canonicalisation forgives, as relays rewrap headers.
    assert verified(data.replace(b"List-Unsubscribe-Post: ", b"List-Unsubscribe-Post:   "), signed_svc.key_file)


def test_a_test_send_and_a_confirmation_mail_are_signed_too(signed_svc, sample_feed):
    newsletter_id = newsroom(signed_svc, sample_feed, readers=1)
    with transaction(signed_svc.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), signed_svc.settings)
        tests = proofs(signed_svc.settings, session.get(Newsletter, newsletter_id), cut.edition,
                                         ["editor@example.com", "desk@example.com"])
        signup = consent.subscribe(session, "new@example.com", [newsletter_id])
        confirmation = consent.confirmation_message(session, signed_svc.settings, signup.subscriber, mail_id=1)

    for message in [*tests, confirmation]:
        assert verified(message.data, signed_svc.key_file), message.message_id
        assert {"from", "to", "subject", "date", "message-id", "content-type"} <= set(signed_headers(message.data))
    assert "reply-to" in signed_headers(tests[0].data)


def test_without_dkim_settings_nothing_is_signed(make_settings, sample_feed, smtp_server, tmp_path):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'test.db'}", smtp_url=smtp_server.url))
    assert svc.settings.dkim is None
    newsletter_id = newsroom(svc, sample_feed, readers=2)
    send_edition(svc, newsletter_id)
    with transaction(svc.Session) as session:
        signup = consent.subscribe(session, "new@example.com", [newsletter_id])
        confirmation = consent.confirmation_message(session, svc.settings, signup.subscriber, mail_id=1)

    for data in [m.data for m in smtp_server.messages] + [confirmation.data]:
        assert data.startswith(b"From: ") and b"DKIM-Signature" not in data


# ── the fast path's bytes: the same message, with a signature in front ───────


PLACEHOLDER = "https://syndicate.invalid/unsubscribe-url"


def test_a_signed_template_message_is_the_unsigned_one_with_a_signature_in_front(make_settings, keys):
    settings = make_settings(dkim_key_file=keys["rsa.pem"], dkim_selector="s1")
    template = PreparedMessage(
        sender=Mailbox("The Morning Briefing", "briefing@example.com"), subject="Armenia — and 3 more",
        text=(GOLDEN / "edition.txt").read_text(), html=(GOLDEN / "edition.html").read_text(),
        reply_to="desk@example.com", dkim=settings.dkim,
        headers={"List-Id": "The Morning Briefing <morning.example.com>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Auto-Submitted": "auto-generated"})
    unsigned = copy.copy(template)
    unsigned.signer = None  # the same template (same boundary) without its signer
    for name in ["", "Zoë Ødegård", "陈静", 'Quote "the" Reader, Esq.']:
        values = dict(to="reader@example.org", name=name, message_id="<1.2.abc@example.com>",
                      date=datetime(2026, 11, 28, 7, 0, tzinfo=UTC), replace={PLACEHOLDER: "https://n.example/u/1"},
                      per_recipient={"List-Unsubscribe": "<https://n.example/u/1>, <mailto:u@example.com?subject=x>"})

        signed, plain = template.render(**values), unsigned.render(**values)

        prefix = signed[:-len(plain)]
        assert signed.endswith(plain) and prefix.startswith(b"DKIM-Signature: ") and prefix.endswith(b"\r\n")
        assert b"\r\n\r\n" not in prefix and max(len(line) for line in prefix.split(b"\r\n")) <= 78
        assert verified(signed, keys["rsa.pem"])
        a, b = (email.message_from_bytes(data, policy=email.policy.default) for data in (signed, plain))
        assert [(k, str(v)) for k, v in a.items() if k != "DKIM-Signature"] == [(k, str(v)) for k, v in b.items()]
        for kind in ("plain", "html"):
            assert a.get_body((kind,)).get_content() == b.get_body((kind,)).get_content()
        assert a.defects == [] and all(part.defects == [] for part in a.iter_parts())
        assert a["DKIM-Signature"].defects == ()


def test_build_message_signs_when_given_the_settings(make_settings, keys):
    settings = make_settings(dkim_key_file=keys["ed25519.key"], dkim_selector="s1")
    values = dict(sender=Mailbox("News", "news@example.com"), to=Mailbox("", "r@example.org"),
                  subject="Confirm", text="Hello\n", html="<p>Hello</p>", message_id="<1@example.com>",
                  date=datetime(2026, 11, 28, 7, 0, tzinfo=UTC))

    signed, plain = build_message(**values, dkim=settings.dkim), build_message(**values)

    assert signed.startswith(b"DKIM-Signature: ") and b"DKIM-Signature" not in plain
    assert verified(signed, keys["ed25519.key"])


@given(st.lists(st.sampled_from([b"a", b"word", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"=20", "é".encode()]),
                max_size=60).map(b"".join))
def test_the_body_is_canonicalised_exactly_as_dkimpy_does_it(body):
    assert signing.canonical_body(body) == Relaxed.canonicalize_body(body)


def test_a_bare_lf_message_is_signed_as_smtp_will_carry_it(make_settings, keys):
    settings = make_settings(dkim_key_file=keys["ed25519.pem"], dkim_selector="s1")
    message = b"From: news@example.com\nTo: r@example.org\nSubject: Hi\n\nHello  there \n\n"

    signed = settings.dkim.signer("news@example.com").sign(message)

    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert verified(signed, keys["ed25519.pem"])


# ── keys and settings ────────────────────────────────────────────────────────


@pytest.mark.parametrize("name, algorithm", [("rsa.pem", b"rsa-sha256"), ("rsa-pkcs1.pem", b"rsa-sha256"),
                                             ("ed25519.pem", b"ed25519-sha256"), ("ed25519.key", b"ed25519-sha256")])
def test_it_loads_each_key_form_and_knows_its_dns_record(keys, name, algorithm):
    key = signing.load_key(keys[name].read_bytes())

    assert key.algorithm == algorithm
    assert key.dns_record.encode() == published(keys[name])


def test_openssl_and_dkimpys_pure_python_rsa_give_the_same_signature(keys):
    key = signing.load_key(keys["rsa.pem"].read_bytes())
    for text in (b"", b"a message", "ünïcode".encode() * 1000):
        assert key.sign(hashlib.sha256(text)) == key.sign_pure_python(hashlib.sha256(text))


def test_the_signing_domain_defaults_to_the_from_domain_and_a_misaligned_one_is_warned_about_once(
        make_settings, keys, caplog, monkeypatch):
    monkeypatch.setattr(signing, "_warned", set())
    own = make_settings(dkim_key_file=keys["ed25519.pem"], dkim_selector="s1").dkim
    shared = make_settings(dkim_key_file=keys["ed25519.pem"], dkim_selector="s1", dkim_domain="Example.ORG").dkim
    message = b"From: news@mail.example.org\r\nTo: r@example.com\r\nSubject: Hi\r\n\r\nHello\r\n"

    assert own.signer("News@Mail.Example.org").domain == b"mail.example.org"
    with caplog.at_level(logging.WARNING, logger="syndicate.mail.dkim"):
        aligned = shared.signer("news@mail.example.org").sign(message)
        assert caplog.records == []
        for _ in range(3):
            shared.signer("news@example.net")

    assert verified(aligned, keys["ed25519.pem"], domain="example.org")
    assert len(caplog.records) == 1
    assert "SYNDICATE_DKIM_DOMAIN" in caplog.records[0].getMessage()
    assert "example.net" in caplog.records[0].getMessage()


def test_the_key_never_shows_in_repr(make_settings, keys):
    settings = make_settings(dkim_key_file=keys["rsa.pem"], dkim_selector="s1")
    pem_line = keys["rsa.pem"].read_text().splitlines()[5]
    private_exponent = str(settings.dkim.key._private["privateExponent"])

    for text in (repr(settings), repr(settings.dkim), repr(settings.dkim.key)):
        assert pem_line not in text and private_exponent[:40] not in text
    assert "2048 bits" in repr(settings.dkim.key) and "selector='s1'" in repr(settings.dkim)


@pytest.mark.parametrize("env, says", [
    (dict(dkim_key_file="rsa.pem"), ["SYNDICATE_DKIM_SELECTOR", "unset SYNDICATE_DKIM_KEY_FILE"]),
    (dict(dkim_selector="s1"), ["SYNDICATE_DKIM_KEY_FILE", "unset SYNDICATE_DKIM_SELECTOR"]),
    (dict(dkim_domain="example.com"), ["SYNDICATE_DKIM_KEY_FILE", "unset SYNDICATE_DKIM_DOMAIN"]),
    (dict(dkim_key_file="missing.pem", dkim_selector="s1"), ["SYNDICATE_DKIM_KEY_FILE", "cannot be read",
                                                             "check the path"]),
    (dict(dkim_key_file="garbage.pem", dkim_selector="s1"), ["SYNDICATE_DKIM_KEY_FILE", "openssl genrsa"]),
    (dict(dkim_key_file="public.pem", dkim_selector="s1"), ["public key", "give the private key"]),
    (dict(dkim_key_file="small.pem", dkim_selector="s1"), ["768-bit", "use 2048"]),
    (dict(dkim_key_file="damaged.pem", dkim_selector="s1"), ["is damaged", "openssl genrsa"]),
    (dict(dkim_key_file="rsa.pem", dkim_selector="s1._domainkey.example.com"), ["SYNDICATE_DKIM_SELECTOR",
                                                                                "selector alone"]),
    (dict(dkim_key_file="rsa.pem", dkim_selector="s1", dkim_domain="exa mple.com"), ["SYNDICATE_DKIM_DOMAIN"]),
    (dict(dkim_key_file="rsa.pem", dkim_selector="s1", dkim_domain="bücher.example"), ["xn--"]),
], ids=lambda value: "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else "")
def test_incomplete_or_broken_dkim_settings_fail_at_startup_saying_what_to_do(make_settings, keys, env, says):
    folder = keys["rsa.pem"].parent
    env = {k: (folder / v if k == "dkim_key_file" else v) for k, v in env.items()}

    with pytest.raises(SettingsError) as raised:
        make_settings(**env)

    for words in says:
        assert words in str(raised.value)
    assert keys["rsa.pem"].read_text().splitlines()[3] not in str(raised.value)


# ── what signing costs (measured and printed, never asserted) ────────────────


def test_it_measures_what_signing_costs_per_message(make_settings, keys):
    """The 4-story golden edition (~18 KB as mailed) through MessageFactory, signed or not."""
    newsletter = Newsletter(id=3, slug="morning", name="The Morning Briefing", from_name="The Morning Briefing",
                            from_address="briefing@example.com", reply_to="desk@example.com",
                            subject_template=DEFAULT_SUBJECT, template="edition", timezone="Europe/Berlin")
    edition = Edition(id=41, newsletter_id=3, number=12, subject="Armenia — and 3 more stories",
                      text=(GOLDEN / "edition.txt").read_text(), html=(GOLDEN / "edition.html").read_text())
    readers = [(500 + i, i, f"reader{i}@example.org", "Zoë Ødegård") for i in range(300)]
    settings = {"unsigned": make_settings(),
                "rsa-sha256 2048": make_settings(dkim_key_file=keys["rsa.pem"], dkim_selector="s1"),
                "ed25519-sha256": make_settings(dkim_key_file=keys["ed25519.key"], dkim_selector="s1")}
    factories = {label: MessageFactory(s, newsletter, edition) for label, s in settings.items()}
    unsigned = factories["unsigned"](*readers[0]).data
    n = {"unsigned": 200, "rsa-sha256 2048": 20, "ed25519-sha256": 200}

    # Rounds interleaved and the best kept: other processes on the machine only ever add time.
    whole, signing = dict.fromkeys(settings, float("inf")), dict.fromkeys(settings, float("inf"))
    for _ in range(5):
        for label, factory in factories.items():
            whole[label] = min(whole[label], per_call(factory, readers[:n[label]]))
            if factory.prepared.signer:
                signing[label] = min(signing[label], per_call(factory.prepared.signer.sign, [(unsigned,)] * n[label]))
    for label, factory in factories.items():
        data = factory(*readers[0]).data
        assert (b"DKIM-Signature" in data) == (settings[label].dkim is not None)
        assert settings[label].dkim is None or verified(data, settings[label].dkim.key_file)
    # For comparison: dkimpy's own sign(), which parses the key and the whole message each time.
    stock = {}
    for label, algorithm, repeat in (("rsa-sha256 2048", b"rsa-sha256", 5), ("ed25519-sha256", b"ed25519-sha256", 50)):
        sign = functools.partial(dkim.sign, selector=b"s1", domain=b"example.com",
                                 privkey=settings[label].dkim.key_file.read_bytes().strip(),
                                 signature_algorithm=algorithm, canonicalize=(b"relaxed", b"relaxed"))
        stock[label] = per_call(sign, [(unsigned,)] * repeat)

    FIGURES.append(f"DKIM on the golden edition ({len(unsigned) / 1000:.1f} KB as mailed), best of 5 rounds:")
    for label, seconds in whole.items():
        line = f"  {label:>16}: MessageFactory {seconds * 1e6:6.0f} µs a message, {1 / seconds:5.0f} messages/s"
        if label in stock:
            line += (f"; the signature alone {signing[label] * 1e6:.0f} µs "
                     f"(dkimpy's own dkim.sign: {stock[label] * 1e6:.0f} µs)")
        FIGURES.append(line)


def per_call(function, calls: list[tuple]) -> float:
    started = time.perf_counter()
    for args in calls:
        function(*args)
    return (time.perf_counter() - started) / len(calls)
