"""A reader's rights, through the reader's pages (the FastAPI app, a real SMTP server) and the `syndicate`
command: erasure and a copy of their data, a welcome after confirming, consent that is given and not
pre-ticked, an unsubscribe that can be undone, and "no newsletters" that protects from imports."""

from __future__ import annotations

import email
import email.policy
import json
import re
from datetime import timedelta

import pytest
import time_machine
from click.testing import CliRunner
from sqlalchemy import func, select, text
from starlette.testclient import TestClient

from conftest import configured, hidden_fields, submit, subscriber_by_email
from syndicate import tokens
from syndicate.cli.main import main
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending
from syndicate.delivery.batches import send_batch
from syndicate.errors import InvalidInput
from syndicate.ingest import feeds
from syndicate.models import (
    ConfirmationMail,
    Delivery,
    Edition,
    ErasedAddress,
    InboundMessage,
    Removal,
    Subscriber,
    SubscriberEvent,
    Subscription,
    utcnow,
)
from syndicate.newsletters import lists
from syndicate.subscribers import consent, csv_files
from syndicate.web.app import create_app

FEED_URL = "https://truthusa.example/feed/"


@pytest.fixture
def client(site):
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def mails(smtp_server) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp_server.messages]


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def link_in(smtp_server, path: str) -> str:
    """The last link to `path` (e.g. /confirm/) mailed, without the server's address."""
    found = [link for m in mails(smtp_server) for link in re.findall(rf"https?://testserver{path}\S+", text_of(m))]
    assert found, [m["Subject"] for m in mails(smtp_server)]
    return found[-1].removeprefix("http://testserver")


def reader(svc, address: str = "ada@example.org", slugs: tuple[str, ...] = ("daily",)) -> int:
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        return consent.subscribe(session, address, ids, name="Ada", confirmed=True).subscriber.id


def sign_up_and_confirm(client, smtp_server, address: str, slug: str = "daily") -> None:
    response = submit(client, "/subscribe", data={"email": address, "newsletter": slug})
    assert "Check your inbox" in response.text, response.text
    confirmed = submit(client, link_in(smtp_server, "/confirm/"))
    assert "your subscription is confirmed" in confirmed.text


# ── consent: nothing pre-ticked, a confirm page that says what ───────────────


def test_the_signup_form_ticks_no_newsletter_and_one_sent_without_any_is_refused_keeping_what_was_typed(client, site):
    form = client.get("/")
    assert 'name="newsletter" value="daily"' in form.text
    assert "checked" not in form.text

    response = submit(client, "/subscribe", data={"email": "ada@example.org", "name": "Ada L"})

    assert response.status_code == 400
    assert "choose at least one newsletter" in response.text
    assert 'value="ada@example.org"' in response.text and 'value="Ada L"' in response.text
    assert subscriber_by_email(site, "ada@example.org") is None


def test_the_confirm_page_names_the_address_and_each_newsletter(client, site, smtp_server):
    with transaction(site.Session) as session:
        lists.add_newsletter(session, slug="brief", name="The Morning <Brief>", from_address="news@example.com")
    submit(client, "/subscribe", data={"email": "Ada@Example.org", "newsletter": ["daily", "brief"]})

    page = client.get(link_in(smtp_server, "/confirm/"))

    assert page.status_code == 200
    assert "Confirm <strong>ada@example.org</strong> for <strong>Daily, The Morning &lt;Brief&gt;</strong>" in page.text


# ── unsubscribe, and its undo ────────────────────────────────────────────────


def test_an_unsubscribe_can_be_undone_from_its_page_and_only_by_a_post_from_that_page(client, site):
    subscriber_id = reader(site)
    with transaction(site.Session) as session:
        daily = lists.get_newsletter(session, "daily").id
    token = tokens.unsubscribe_token(site.settings.secret_key, subscriber_id, daily)

    done = client.post(f"/u/{token}", content="List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "unsubscribed</h1>" in done.text and f'action="/u/{token}/undo"' in done.text
    forged = client.post(f"/u/{token}/undo", data={"form_token": "made-up"})
    assert forged.status_code in (400, 403)
    with transaction(site.Session) as session:
        assert session.get(Subscription, 1).status == "unsubscribed"

    undone = client.post(f"/u/{token}/undo", data=hidden_fields(done.text))

    assert "subscribed to Daily again" in undone.text
    with transaction(site.Session) as session:
        assert session.scalar(select(Subscription.status)
                              .where(Subscription.subscriber_id == subscriber_id)) == "active"
        kinds = session.scalars(select(SubscriberEvent.detail).where(SubscriberEvent.kind == "resubscribed")).all()
        assert kinds == ["undid unsubscribing"]


def test_after_thirty_days_the_unsubscribe_page_says_how_to_sign_up_again_and_the_undo_is_refused(client, site):
    subscriber_id = reader(site)
    token = tokens.unsubscribe_token(site.settings.secret_key, subscriber_id, 1)
    done = client.post(f"/u/{token}", content="List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    with transaction(site.Session) as session:
        session.get(Subscription, 1).unsubscribed_at = utcnow() - timedelta(days=31)

    again = client.get(f"/u/{token}")
    late = client.post(f"/u/{token}/undo", data=hidden_fields(done.text))

    assert "more than 30 days since you left" in again.text and 'href="/"' in again.text
    assert "/undo" not in again.text
    assert late.status_code == 400 and "sign up again" in late.text
    with transaction(site.Session) as session:
        assert session.get(Subscription, 1).status == "unsubscribed"


# ── "no newsletters" protects like "leave all" ───────────────────────────────


def test_unticking_every_newsletter_keeps_an_import_from_adding_the_reader_to_another(client, site):
    subscriber_id = reader(site)
    with transaction(site.Session) as session:
        weekly = lists.add_newsletter(session, slug="weekly", name="Weekly", from_address="news@example.com").id
    path = f"/p/{tokens.preferences_token(site.settings.secret_key, subscriber_id)}"

    saved = submit(client, path, data={"action": "save"})  # every box unticked
    assert saved.status_code == 200
    with transaction(site.Session) as session:
        report = csv_files.import_csv(session, "email\nada@example.org\n", [weekly])

    assert report.added == report.updated == 0
    assert [reason for _, _, reason in report.skipped] == ["previously unsubscribed, skipped (use --force to add back)"]
    with transaction(site.Session) as session:
        assert session.get(Subscriber, subscriber_id).status == "unsubscribed"
        assert not session.scalar(select(func.count()).select_from(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.status != "unsubscribed"))


# ── self-service: my data, and deleting it ───────────────────────────────────


def test_a_reader_downloads_everything_held_about_them_as_json(client, site, smtp_server):
    sign_up_and_confirm(client, smtp_server, "ada@example.org")
    subscriber_id = subscriber_by_email(site, "ada@example.org").id
    path = f"/p/{tokens.preferences_token(site.settings.secret_key, subscriber_id)}"
    assert f'href="{path}/data.json"' in client.get(path).text

    response = client.get(f"{path}/data.json")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    data = response.json()
    assert data["format"] == "syndicate-personal-data/1"
    assert data["subscriber"]["email"] == "ada@example.org"
    assert [s["newsletter"] for s in data["subscriptions"]] == ["daily"]
    assert data["subscriptions"][0]["status"] == "active"
    assert [e["kind"] for e in data["timeline"]] == ["subscribed", "confirmed"]
    assert data["consent"]["confirmed_at"]
    assert [h["what"] for h in data["consent"]["how"]] == ["subscribed", "confirmed"]
    assert [m["kind"] for m in data["mails_about_the_subscription"]] == ["confirm"]
    damaged = client.get(f"{path}x/data.json")
    assert damaged.status_code == 400 and "damaged" in damaged.text


def test_delete_my_data_mails_a_link_whose_page_erases_only_when_its_button_is_pressed(client, site, smtp_server):
    sign_up_and_confirm(client, smtp_server, "ada@example.org")
    subscriber_id = subscriber_by_email(site, "ada@example.org").id
    path = f"/p/{tokens.preferences_token(site.settings.secret_key, subscriber_id)}"

    asked = submit(client, path, data={"action": "erase"})
    assert "Check your inbox" in asked.text
    again = submit(client, path, data={"action": "erase"})  # pressed twice: one mail
    assert "One was sent in the last hour already" in again.text
    erase_mails = [m for m in mails(smtp_server) if "delete your data" in m["Subject"]]
    assert len(erase_mails) == 1 and erase_mails[0]["To"].addresses[0].addr_spec == "ada@example.org"
    link = link_in(smtp_server, "/erase/")

    page = client.get(link)  # what a mail scanner does: nothing erased
    assert "Delete my data" in page.text and "ada@example.org" in page.text
    assert subscriber_by_email(site, "ada@example.org") is not None
    assert client.post(link, data={"form_token": "forged"}).status_code in (400, 403)
    assert subscriber_by_email(site, "ada@example.org") is not None

    done = submit(client, link)

    assert "Your data is deleted" in done.text
    assert subscriber_by_email(site, "ada@example.org") is None
    with transaction(site.Session) as session:
        removal = session.scalars(select(Removal)).one()
        assert (removal.kind, removal.action, removal.by) == ("subscriber", "erased", "reader")
        assert "ada" not in f"{removal.name} {removal.detail}".lower()
        assert session.scalar(select(func.count()).select_from(ErasedAddress)) == 1
        assert not session.scalar(select(func.count()).select_from(ConfirmationMail))
        report = csv_files.import_csv(session, "email\nADA@example.org\n", [1], force=True)
    assert [reason for _, _, reason in report.skipped] == ["erased at the reader's request, skipped"]
    assert "We hold no data about this address any more" in client.get(link).text
    damaged = client.get(link[:-3] + "abc")
    assert damaged.status_code == 400 and "damaged" in damaged.text


def test_an_erase_link_older_than_two_days_is_refused_and_says_to_ask_again(client, site):
    subscriber_id = reader(site)
    with time_machine.travel(utcnow() - timedelta(hours=49)):
        old = tokens.erase_token(site.settings.secret_key, subscriber_id)

    response = client.get(f"/erase/{old}")

    assert response.status_code == 400 and "expired" in response.text and "preferences page" in response.text
    assert subscriber_by_email(site, "ada@example.org") is not None


def test_an_erased_reader_may_sign_up_again_themselves_and_their_confirmation_lifts_the_block(client, site,
                                                                                              smtp_server):
    subscriber_id = reader(site)
    with transaction(site.Session) as session:
        from syndicate.subscribers import rights

        rights.erase(session, session.get(Subscriber, subscriber_id), "cli")
        with pytest.raises(InvalidInput, match="erased at the reader.s request"):
            with session.begin_nested():
                consent.subscribe(session, "ada@example.org", [1], source="cli", confirmed=True)

    sign_up_and_confirm(client, smtp_server, "ada@example.org")

    assert subscriber_by_email(site, "ada@example.org").status == "confirmed"
    with transaction(site.Session) as session:
        assert not session.scalar(select(func.count()).select_from(ErasedAddress))


# ── the welcome mail ─────────────────────────────────────────────────────────


def test_a_newsletter_with_a_welcome_sends_one_once_the_reader_confirms(client, site, smtp_server):
    with transaction(site.Session) as session:
        lists.update_newsletter(session, lists.get_newsletter(session, "daily"), welcome=True)
        lists.add_newsletter(session, slug="quiet", name="Quiet", from_address="news@example.com")
    submit(client, "/subscribe", data={"email": "ada@example.org", "newsletter": ["daily", "quiet"]})
    link = link_in(smtp_server, "/confirm/")

    submit(client, link)
    submit(client, link)  # pressed twice: one welcome

    welcomes = [m for m in mails(smtp_server) if m["Subject"].startswith("Welcome")]
    assert [m["Subject"] for m in welcomes] == ["Welcome to Daily"]
    body = text_of(welcomes[0])
    assert "ada@example.org is confirmed" in body and "http://testserver/p/" in body
    with transaction(site.Session) as session:
        assert session.scalars(select(ConfirmationMail.status).where(ConfirmationMail.kind == "welcome")).all() == [
            "sent"]


def test_no_welcome_goes_out_when_the_newsletter_has_none(client, site, smtp_server):
    sign_up_and_confirm(client, smtp_server, "ada@example.org")

    assert [m["Subject"] for m in mails(smtp_server)] == ["Please confirm your subscription to Daily"]


def test_a_welcome_template_for_one_newsletter_overrides_the_shared_one(make_settings, tmp_path, smtp_server):
    own = tmp_path / "templates" / "email" / "welcome-daily"
    own.mkdir(parents=True)
    (own / "subject.txt").write_text("Hello from the Daily desk\n")
    (own / "body.txt").write_text("Our own words for {{ subscriber.email }}.\n")
    (own / "body.html").write_text("<p>Our own words for {{ subscriber.email }}.</p>\n")
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'own.db'}", smtp_url=smtp_server.url,
                                   template_dir=tmp_path / "templates"), eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com", welcome=True)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        sign_up_and_confirm(client, smtp_server, "ada@example.org")

    welcome = mails(smtp_server)[-1]
    assert welcome["Subject"] == "Hello from the Daily desk"
    assert "Our own words for ada@example.org." in text_of(welcome)


# ── the command line ─────────────────────────────────────────────────────────


@pytest.fixture
def env(tmp_path, smtp_server) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example",
            "SYNDICATE_SMTP_URL": smtp_server.url, "SYNDICATE_LINK_CHECK": "0"}


@pytest.fixture
def syndicate(env):
    runner = CliRunner()

    def run(*args: str, ok: bool = True, input: str | None = None):
        result = runner.invoke(main, list(args), env=env, input=input)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    run("db", "upgrade")
    run("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com", "--max-age", "0",
        "--first-fill", "last:50")
    run("subscriber", "add", "ada@example.org", "--newsletter", "daily", "--confirmed", "--name", "Ada")
    run("subscriber", "add", "bob@example.org", "--newsletter", "daily", "--confirmed")
    return run


def sent_edition(svc, sample_feed) -> int:
    """Edition 1 of "daily" sent to both readers over the real SMTP server; Ada's copy then bounced and she
    left the newsletter after it went out."""
    with transaction(svc.Session) as session:
        feeds.ingest(session, feeds.add_feed(session, FEED_URL), sample_feed)
        cut = sending.cut(session, lists.get_newsletter(session, "daily"), svc.settings)
    for edition_id, lo, hi in cut.batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi, "test")
    with transaction(svc.Session) as session:
        ada = session.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        delivery = session.scalar(select(Delivery).where(Delivery.subscriber_id == ada.id))
        assert delivery.status == "sent"
        delivery.last_reply = "250 ok: queued for <ada@example.org>"
        consent.suppress(session, ada, "bounced", "smtp", "550 5.1.1 <ada@example.org>: no such user",
                         delivery_id=delivery.id)
        session.add(InboundMessage(via="smtp", outcome="bounce", sender="mailer-daemon@example.org",
                                   subject="Undelivered: ada@example.org", digest="x" * 64, subscriber_id=ada.id,
                                   delivery_id=delivery.id, raw=b"To: ada@example.org"))
        return cut.edition.id


def figures(svc, edition_id: int) -> dict:
    with transaction(svc.Session) as session:
        return deliveries.report(session, session.get(Edition, edition_id))


def test_the_cli_erases_a_reader_after_asking_and_the_editions_figures_stay_as_they_were(syndicate, env,
                                                                                         sample_feed):
    svc = configured(Settings.from_env(env))
    edition_id = sent_edition(svc, sample_feed)
    before = figures(svc, edition_id)
    assert (before["sent"], before["bounced"]) == (2, 1)

    declined = syndicate("subscriber", "erase", "ada@example.org", ok=False, input="n\n")
    assert declined.exit_code == 1 and subscriber_by_email(svc, "ada@example.org") is not None
    done = syndicate("subscriber", "erase", "ADA@example.org", "--yes")

    assert "ada@example.org erased: 1 subscriptions" in done.output
    assert "1 deliveries kept for the editions' figures" in done.output
    assert figures(svc, edition_id) == before
    assert subscriber_by_email(svc, "ada@example.org") is None
    with transaction(svc.Session) as session:
        kept = session.scalars(select(Delivery).where(Delivery.subscriber_id.is_(None))).one()
        assert (kept.status, kept.last_reply, kept.erased_with) == ("sent", None, "bounced")
        assert not session.scalar(select(func.count()).select_from(InboundMessage))
        everything = " ".join(str(row) for table in ("subscriber_events", "subscriptions", "removals", "deliveries",
                                                        "throttles", "inbound_messages", "confirmation_mails")
                              for row in session.execute(text(f"SELECT * FROM {table}")).all())
        assert "ada" not in everything.lower()
    refused = syndicate("subscriber", "add", "ada@example.org", "--newsletter", "daily", "--confirmed", ok=False)
    assert "erased at the reader's request" in str(refused.exception)

    with transaction(svc.Session) as session:  # Bob leaves after the edition went out, then is erased too
        bob = session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.org")).id
        consent.unsubscribe(session, svc.settings, tokens.unsubscribe_token(svc.settings.secret_key, bob, 1))
    left = figures(svc, edition_id)
    assert left["unsubscribed since"] == 1
    syndicate("subscriber", "erase", "bob@example.org", "--yes")
    assert figures(svc, edition_id) == left


def test_a_cli_import_skips_an_erased_address_even_forced_and_says_why(syndicate, tmp_path):
    syndicate("subscriber", "erase", "ada@example.org", "--yes")
    (tmp_path / "list.csv").write_text("email,name\nAda@Example.org,Ada\ncarol@example.org,Carol\n")

    result = syndicate("subscriber", "import", str(tmp_path / "list.csv"), "--newsletter", "daily", "--force")

    assert "1 added" in result.output and "1 skipped" in result.output
    assert "line 2: (an erased address): erased at the reader's request, skipped" in result.output
    assert "ada@" not in result.output.lower()


def test_the_cli_exports_everything_held_about_a_reader(syndicate, tmp_path):
    printed = json.loads(syndicate("subscriber", "export-data", "ada@example.org").output)
    syndicate("subscriber", "export-data", "ada@example.org", "--output", str(tmp_path / "ada.json"))

    written = json.loads((tmp_path / "ada.json").read_text())
    assert printed["format"] == written["format"] == "syndicate-personal-data/1"
    assert written["subscriber"]["email"] == "ada@example.org" and written["subscriber"]["name"] == "Ada"
    assert [s["newsletter"] for s in written["subscriptions"]] == ["daily"]
    assert [e["kind"] for e in written["timeline"]] == ["subscribed"]
    missing = syndicate("subscriber", "export-data", "nobody@example.org", ok=False)
    assert missing.exit_code != 0 and "no subscriber" in str(missing.exception)


def test_the_cli_turns_a_newsletters_welcome_on_and_off(syndicate):
    assert "welcome:" in syndicate("newsletter", "edit", "daily", "--welcome").output
    shown = json.loads(syndicate("newsletter", "show", "daily", "--json").output)
    assert shown["welcome"] is True
    syndicate("newsletter", "edit", "daily", "--no-welcome")
    assert json.loads(syndicate("newsletter", "show", "daily", "--json").output)["welcome"] is False


# ── the migration, and erasure, on both databases ────────────────────────────


def test_the_migration_keeps_existing_rows_valid_and_an_erasure_works_on_each_database(database_url, make_settings,
                                                                                      tmp_path):
    from alembic import command

    from syndicate import db

    settings = make_settings(database_url=database_url)
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine, "0018")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO newsletters (slug, name, from_name, from_address, subject_template, template, timezone, "
            "max_items, max_age_hours, first_fill, status, articles_since, created_at, count_clicks) VALUES "
            "('daily', 'Daily', 'Daily', 'news@example.com', 's', 'edition', 'UTC', 20, 72, 'none', 'active', "
            ":t, :t, false)"), {"t": utcnow()})
        connection.execute(text("INSERT INTO subscribers (email, status, created_at, confirmations_sent) VALUES "
                                "('ada@example.org', 'pending', :t, 1)"), {"t": utcnow()})
        connection.execute(text("INSERT INTO confirmation_mails (subscriber_id, status, attempts, created_at) "
                                "VALUES (1, 'sent', 0, :t)"), {"t": utcnow()})
    db.upgrade(engine)
    svc = configured(settings)
    with transaction(svc.Session) as session:
        assert session.get(ConfirmationMail, 1).kind == "confirm"
        assert lists.get_newsletter(session, "daily").welcome is False
        from syndicate.subscribers import rights

        rights.erase(session, session.get(Subscriber, 1), "cli")
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        assert rights.is_erased(session, "Ada@Example.org")
    command.downgrade(db.alembic_config(engine), "0018")
    assert db.current_revision(engine) == "0018"
    engine.dispose()


# ── the mail ledger's kinds: never twice, never lost ─────────────────────────


def test_an_erasure_mail_whose_task_was_lost_is_handed_out_by_the_tick_and_sent_once(site, smtp_server):
    from syndicate import tasks

    subscriber_id = reader(site)
    asked_at = utcnow()
    with transaction(site.Session) as session:
        assert consent.ask_erasure(session, session.get(Subscriber, subscriber_id), now=asked_at)
        # The confirmation lane doesn't take it: a pending erasure mail is no confirmation to send.
        assert consent.confirmation_to_mail(session, site.settings, subscriber_id, "other-task", asked_at) is None
    # No task was queued (the broker lost it): the tick finds the mail once its lease is over.
    later = asked_at + site.settings.leases.requeue + timedelta(seconds=1)
    with transaction(site.Session) as session:
        assert consent.lost_confirmations(session, site.settings, later) == [subscriber_id]

    assert tasks.send_confirmation(subscriber_id).startswith("sent")
    assert tasks.send_confirmation(subscriber_id) == "not needed"

    assert [m["Subject"] for m in mails(smtp_server)] == ["Confirm: delete your data from Daily"]
    with transaction(site.Session) as session:
        assert session.scalars(select(ConfirmationMail.status)).all() == ["sent"]


def test_another_sites_page_cannot_press_the_erase_button_even_with_a_harvested_form_token(client, site):
    subscriber_id = reader(site)
    link = f"/erase/{tokens.erase_token(site.settings.secret_key, subscriber_id)}"
    fields = hidden_fields(client.get(link).text)

    response = client.post(link, data=fields, headers={"Origin": "https://win-a-prize.example"})

    assert response.status_code == 403
    assert subscriber_by_email(site, "ada@example.org") is not None
