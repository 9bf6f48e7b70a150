"""Readers in their newsletter's language, through the real app, a real SMTP server and a real database: the
sign-up form and preferences in the language the browser asks for, the confirmation mail, the confirm,
unsubscribe and archive pages in the newsletter's own; English when neither is known."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from conftest import configured, submit
from syndicate import tokens
from syndicate.db import transaction
from syndicate.models import Edition
from syndicate.newsletters import lists
from syndicate.subscribers import consent
from syndicate.web.app import create_app

GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
ENGLISH = {"Accept-Language": "en-GB,en;q=0.9"}


@pytest.fixture
def site(make_settings, tmp_path, smtp_server):
    """Two newsletters: "Der Morgen" (German) and "Daily" (English)."""
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'languages.db'}", smtp_url=smtp_server.url),
                     eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="morgen", name="Der Morgen", from_address="morgen@example.com",
                             timezone="Europe/Berlin", language="de")
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
    return svc


def browser(headers: dict[str, str] | None = None) -> TestClient:
    return TestClient(create_app(), raise_server_exceptions=False, headers=headers or {})


def mails_to(smtp_server, address: str) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default)
            for m in smtp_server.messages if m.recipients == [address]]


def subscriber_of(svc, address: str, slugs: tuple[str, ...], confirmed: bool = True) -> int:
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        return consent.subscribe(session, address, ids, confirmed=confirmed).subscriber.id


def heading(page) -> str:
    return re.search(r"<h1>(.*?)</h1>", page.text, re.S).group(1)


def test_the_signup_form_is_in_the_language_the_browser_asks_for(site):
    with browser(GERMAN) as german, browser(ENGLISH) as english, browser() as nobody:
        page = german.get("/")
        assert page.headers["content-language"] == "de" and '<html lang="de">' in page.text
        assert "Accept-Language" in page.headers["vary"]
        assert heading(page) == "Die Nachrichten per E-Mail" and ">Abonnieren</button>" in page.text
        assert "E-Mail-Adresse" in page.text and "<title>Abonnieren</title>" in page.text
        for other in (english.get("/"), nobody.get("/")):
            assert other.headers["content-language"] == "en" and heading(other) == "Get the news by email"


@pytest.mark.parametrize("header", ["de;q=banana", "\x7f\x7f", "x" * 9000, "de-" + "A" * 300, "*"])
def test_a_malformed_accept_language_gets_the_english_form_not_an_error(site, header):
    with browser({"Accept-Language": header}) as client:
        page = client.get("/")
    assert page.status_code == 200 and page.headers["content-language"] == "en"


def test_a_german_newsletters_confirmation_mail_and_pages_are_in_german(site, smtp_server):
    with browser(GERMAN) as client:
        answer = submit(client, "/subscribe", data={"email": "leser@example.org", "name": "Lena",
                                                    "newsletter": "morgen"})
        assert answer.status_code == 200 and heading(answer) == "Sehen Sie in Ihr Postfach"
        assert "Wir haben Ihnen eine E-Mail mit einem Link" in answer.text

    [mail] = mails_to(smtp_server, "leser@example.org")
    assert mail["Subject"] == "Bitte bestätigen Sie Ihr Abonnement von Der Morgen"
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Hallo Lena,\n\nJemand – hoffentlich Sie – möchte Der Morgen an leser@example.org "
                           "erhalten.\n\nZur Bestätigung öffnen Sie diesen Link")
    html = mail.get_body(("html",)).get_content()
    assert '<html lang="de"' in html and ">Mein Abonnement bestätigen</a>" in html
    assert "möchte <strong>Der Morgen</strong> an leser@example.org erhalten." in html
    assert "Confirm" not in text and "Confirm my subscription" not in html

    # The confirm page goes on in the mail's language, whatever the browser that opens the link says.
    link = re.search(r"http://testserver(/confirm/[A-Za-z0-9._-]+)", text).group(1)
    with browser(ENGLISH) as client:
        page = client.get(link)
        assert page.headers["content-language"] == "de" and heading(page) == "Bestätigen Sie Ihr Abonnement"
        done = submit(client, link)
    assert heading(done) == "Sie sind angemeldet" and "Ihr Abonnement ist bestätigt" in done.text


def test_an_english_newsletters_confirmation_mail_stays_english_for_a_german_browser(site, smtp_server):
    with browser(GERMAN) as client:
        submit(client, "/subscribe", data={"email": "reader@example.org", "newsletter": "daily"})
    [mail] = mails_to(smtp_server, "reader@example.org")
    assert mail["Subject"] == "Please confirm your subscription to Daily"
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Hello,\n\nSomeone — hopefully you — asked to receive Daily at reader@example.org.\n")


def test_the_unsubscribe_page_is_in_the_newsletters_language(site):
    subscriber_id = subscriber_of(site, "leser@example.org", ("morgen", "daily"))
    with transaction(site.Session) as session:
        morgen, daily = (lists.get_newsletter(session, slug).id for slug in ("morgen", "daily"))
    key = site.settings.secret_key
    with browser(ENGLISH) as client:
        page = client.get(f"/u/{tokens.unsubscribe_token(key, subscriber_id, morgen)}")
        assert page.headers["content-language"] == "de" and heading(page) == "Der Morgen abbestellen?"
        assert "leser@example.org erhält Der Morgen ab sofort nicht mehr." in page.text
        left = client.post(f"/u/{tokens.unsubscribe_token(key, subscriber_id, morgen)}")
        assert heading(left) == "Sie sind abgemeldet" and "Sie erhalten Der Morgen nicht mehr." in left.text
    with browser(GERMAN) as client:
        page = client.get(f"/u/{tokens.unsubscribe_token(key, subscriber_id, daily)}")
        assert page.headers["content-language"] == "en" and heading(page) == "Unsubscribe from Daily?"


def test_the_preferences_page_follows_the_browser(site):
    subscriber_id = subscriber_of(site, "leser@example.org", ("morgen",))
    path = f"/p/{tokens.preferences_token(site.settings.secret_key, subscriber_id)}"
    with browser(GERMAN) as client:
        page = client.get(path)
        assert heading(page) == "Ihre Newsletter" and "Für <strong>leser@example.org</strong>" in page.text
        saved = submit(client, path, data={"action": "save", "newsletter": ["morgen", "daily"]})
    assert saved.status_code == 200 and "Gespeichert. Ab jetzt: Daily." in saved.text
    with browser() as client:
        assert heading(client.get(path)) == "Your newsletters"


def test_the_archive_and_web_view_are_in_the_newsletters_language(site):
    at = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)  # Monday the 7th in Berlin
    with transaction(site.Session) as session:
        newsletter = lists.get_newsletter(session, "morgen")
        session.add(Edition(newsletter_id=newsletter.id, number=1, status="sent", subject="Der Stadtrat tagt",
                            html='<html lang="de"><body>Ausgabe</body></html>', text="Ausgabe", cut_at=at,
                            scheduled_for=at, started_at=at, sent_at=at, warnings=[]))
    with browser(ENGLISH) as client:
        archive = client.get("/n/morgen")
        view = client.get("/n/morgen/1")
        missing = client.get("/n/nowhere", headers=GERMAN)
    assert archive.headers["content-language"] == "de" and "<title>Der Morgen: frühere Ausgaben</title>" in archive.text
    assert '<time datetime="2026-12-07">7. Dezember 2026</time>' in archive.text and "Atom-Feed" in archive.text
    assert view.headers["content-language"] == "de"
    assert missing.status_code == 404 and heading(missing) == "Nicht gefunden"
    assert missing.headers["content-language"] == "de"


@pytest.mark.parametrize("data, said", [
    ({"email": "not an address", "newsletter": "morgen"},
     "An not an address können wir nicht senden: Prüfen Sie die Adresse und versuchen Sie es noch einmal."),
    ({"email": "leser@example.org"}, "Wählen Sie mindestens einen Newsletter."),
    ({"email": "<script>alert(1)</script>@x", "newsletter": "morgen"},
     "An &lt;script&gt;alert(1)&lt;/script&gt;@x können wir nicht senden"),
])
def test_the_signup_forms_refusals_are_in_the_browsers_language_and_escaped(site, smtp_server, data, said):
    with browser(GERMAN) as client:
        refused = submit(client, "/subscribe", data=data)
    assert refused.status_code == 400 and refused.headers["content-language"] == "de"
    assert said in re.search(r'<p class="error">(.*?)</p>', refused.text, re.S).group(1)
    assert "<script>" not in refused.text and smtp_server.messages == []


def test_an_archived_newsletter_refuses_a_german_signup_in_german(site):
    with transaction(site.Session) as session:
        lists.get_newsletter(session, "morgen").status = "archived"
    with browser(GERMAN) as client:
        form = client.get("/")
        refused = client.post("/subscribe", data={**dict(re.findall(
            r'<input type="hidden" name="([^"]*)" value="([^"]*)"', form.text)), "email": "leser@example.org",
            "newsletter": "morgen"})
    assert refused.status_code == 400 and "Der Morgen nimmt keine neuen Leser mehr auf." in refused.text
