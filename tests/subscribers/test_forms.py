"""The reader's forms (subscribe, confirm, preferences) act only when posted from our own page, recently;
RFC 8058 one-click unsubscribe stays open to a mailbox provider with no cookie, Origin or form token.
Through the real FastAPI app, a real SMTP server and a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.testclient import TestClient

from conftest import configured, form_fields, hidden_fields, subscriber_by_email
from syndicate import tokens
from syndicate.db import transaction
from syndicate.models import Subscription
from syndicate.newsletters import lists
from syndicate.subscribers import consent
from syndicate.web import forms
from syndicate.web.app import create_app

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ONE_CLICK = {"content": "List-Unsubscribe=One-Click",
             "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
EVIL = "https://evil.example"
# How a browser on another site's page says where the POST came from (or can be made to).
CROSS_SITE = {
    "another site's Origin": {"Origin": EVIL},
    "our host on another scheme": {"Origin": "https://testserver"},
    "our host on another port": {"Origin": "http://testserver:8080"},
    "an opaque origin (sandboxed frame)": {"Origin": "null"},
    "another site's Referer, no Origin": {"Referer": EVIL + "/signup-bomb.html"},
}


@pytest.fixture
def site(site):
    """The newsroom of the public pages, with a second newsletter."""
    with transaction(site.Session) as session:
        lists.add_newsletter(session, slug="weekly", name="Weekly", from_address="news@example.com")
    return site


@pytest.fixture
def client(site):
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def pending_reader(svc, address: str = "reader@example.com") -> int:
    with transaction(svc.Session) as session:
        daily = lists.get_newsletter(session, "daily").id
        return consent.subscribe(session, address, [daily]).subscriber.id


def confirmed_reader(svc, address: str = "reader@example.com") -> int:
    with transaction(svc.Session) as session:
        daily = lists.get_newsletter(session, "daily").id
        return consent.subscribe(session, address, [daily], confirmed=True).subscriber.id


def subscriptions(svc, subscriber_id: int) -> dict[int, str]:
    with transaction(svc.Session) as session:
        return dict(session.execute(select(Subscription.newsletter_id, Subscription.status)
                                    .where(Subscription.subscriber_id == subscriber_id)).all())


# ── subscribe ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_cross_site_subscribe_post_signs_nobody_up_and_sends_no_mail(client, site, smtp_server, headers):
    # The attacker's page even carries a form token fetched from our site by their server.
    form = {**form_fields(client, "/"), "email": "victim@example.com", "newsletter": "daily"}

    response = client.post("/subscribe", data=form, headers=headers)

    assert response.status_code == 403
    assert "reload the page and try once more" in response.text
    assert 'href="/"' in response.text  # the way back to a fresh form
    assert subscriber_by_email(site, "victim@example.com") is None
    assert smtp_server.messages == []


def test_a_forged_subscribe_post_without_our_form_token_signs_nobody_up(client, site, smtp_server):
    # Neither Origin nor Referer (an old browser, a stripped header): the missing token alone refuses it.
    for form in ({}, {"form_token": "forged"}, {"form_token": forms.token("another-secret", "subscribe")}):
        response = client.post("/subscribe", data={**form, "email": "victim@example.com", "newsletter": "daily"})
        assert response.status_code == 403
    assert subscriber_by_email(site, "victim@example.com") is None
    assert smtp_server.messages == []


def test_a_token_for_one_form_does_not_pass_for_another(client, site):
    subscriber_id = pending_reader(site)
    confirm = f"/confirm/{tokens.confirm_token(site.settings.secret_key, subscriber_id)}"
    other_reader = confirmed_reader(site, "other@example.com")
    others_preferences = form_fields(client, f"/p/{tokens.preferences_token(site.settings.secret_key, other_reader)}")

    assert client.post(confirm, data=form_fields(client, "/")).status_code == 403
    assert client.post(confirm, data=others_preferences).status_code == 403
    assert subscriber_by_email(site, "reader@example.com").status == "pending"


def test_the_subscribe_form_posted_from_our_own_page_signs_the_reader_up(client, site, smtp_server):
    form = {**form_fields(client, "/"), "email": "reader@example.com", "newsletter": "daily"}

    response = client.post("/subscribe", data=form,
                           headers={"Origin": "http://testserver", "Referer": "http://testserver/"})

    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert subscriber_by_email(site, "reader@example.com").status == "pending"
    assert len(smtp_server.messages) == 1


def test_a_subscribe_form_left_open_too_long_comes_back_filled_in_and_does_nothing(client, site, smtp_server):
    with time_machine.travel(T0, tick=False):
        form = {**form_fields(client, "/"), "email": "reader@example.com", "name": "Ada",
                "newsletter": "weekly"}
    with time_machine.travel(T0 + timedelta(hours=forms.FORM_HOURS, minutes=1), tick=False):
        again = client.post("/subscribe", data=form)
        assert again.status_code == 400
        assert "Here it is again" in again.text
        assert 'value="reader@example.com"' in again.text and 'value="Ada"' in again.text
        assert 'value="weekly" id="n-weekly" checked' in again.text
        assert subscriber_by_email(site, "reader@example.com") is None and smtp_server.messages == []

        # The page it hands back carries a fresh token: pressing the button again works.
        resent = client.post("/subscribe", data={**form, "form_token": hidden_fields(again.text)["form_token"]})
    assert "Check your inbox" in resent.text
    assert len(smtp_server.messages) == 1


# ── confirm and preferences ─────────────────────────────────────────────────


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_cross_site_confirm_post_confirms_nobody(client, site, smtp_server, headers):
    path = f"/confirm/{tokens.confirm_token(site.settings.secret_key, pending_reader(site))}"

    response = client.post(path, data=form_fields(client, path), headers=headers)

    assert response.status_code == 403
    assert f'href="{path}"' in response.text
    assert subscriber_by_email(site, "reader@example.com").status == "pending"


def test_a_confirm_button_pressed_after_the_form_expired_is_shown_again(client, site):
    path = f"/confirm/{tokens.confirm_token(site.settings.secret_key, pending_reader(site))}"
    with time_machine.travel(T0, tick=False):
        form = form_fields(client, path)
    with time_machine.travel(T0 + timedelta(hours=forms.FORM_HOURS + 1), tick=False):
        again = client.post(path, data=form)
        assert again.status_code == 400 and "Here it is again" in again.text
        assert subscriber_by_email(site, "reader@example.com").status == "pending"
        assert "confirmed" in client.post(path, data=hidden_fields(again.text)).text
    assert subscriber_by_email(site, "reader@example.com").status == "confirmed"


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_cross_site_preferences_post_changes_nothing(client, site, headers):
    subscriber_id = confirmed_reader(site)
    path = f"/p/{tokens.preferences_token(site.settings.secret_key, subscriber_id)}"
    before = subscriptions(site, subscriber_id)

    response = client.post(path, data={**form_fields(client, path), "action": "leave"}, headers=headers)

    assert response.status_code == 403
    assert subscriptions(site, subscriber_id) == before
    assert subscriber_by_email(site, "reader@example.com").status == "confirmed"


def test_a_preferences_form_left_open_too_long_saves_nothing_and_comes_back(client, site):
    subscriber_id = confirmed_reader(site)
    path = f"/p/{tokens.preferences_token(site.settings.secret_key, subscriber_id)}"
    before = subscriptions(site, subscriber_id)
    with time_machine.travel(T0, tick=False):
        form = {**form_fields(client, path), "action": "leave"}
    with time_machine.travel(T0 + timedelta(days=3), tick=False):
        again = client.post(path, data=form)
    assert again.status_code == 400 and "Here it is again" in again.text
    assert subscriptions(site, subscriber_id) == before


# ── RFC 8058 one-click unsubscribe stays exempt ─────────────────────────────


@pytest.mark.parametrize("headers", [{}, {"Origin": "https://mail.provider.example"}, {"Origin": "null"}],
                         ids=["no Origin", "the provider's Origin", "an opaque origin"])
def test_a_one_click_unsubscribe_needs_no_cookie_origin_or_form_token(site, headers):
    subscriber_id = confirmed_reader(site)
    with transaction(site.Session) as session:
        daily = lists.get_newsletter(session, "daily").id
    token = tokens.unsubscribe_token(site.settings.secret_key, subscriber_id, daily)

    with TestClient(create_app()) as provider:  # a mailbox provider's server: no cookie, nothing but the POST
        response = provider.post(f"/u/{token}", follow_redirects=False,
                                 **{**ONE_CLICK, "headers": {**ONE_CLICK["headers"], **headers}})

    assert response.status_code == 200
    assert subscriptions(site, subscriber_id) == {daily: "unsubscribed"}


# ── the checks themselves ───────────────────────────────────────────────────


@given(st.text(max_size=80))
def test_no_origin_but_our_own_passes(origin):
    if origin.strip().lower() == "http://testserver":
        return
    with pytest.raises(forms.FormRefused):
        forms.check_origin("http://testserver", origin, None)


def test_our_own_origin_passes_with_its_default_port_left_out():
    forms.check_origin("https://news.example:443/", "https://news.example", None)
    forms.check_origin("https://news.example", None, "https://news.example/p/abc?x=1")
    forms.check_origin("https://news.example", None, None)  # a script: the form token decides


# ── in a real browser ───────────────────────────────────────────────────────


@pytest.fixture
def served_site(make_settings, tmp_path, smtp_server):
    """The app on a real port whose SYNDICATE_BASE_URL is that port: the browser's Origin is ours."""
    import threading

    import uvicorn

    from conftest import free_port, wait_for

    port = free_port()
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'served.db'}", smtp_url=smtp_server.url,
                                   base_url=f"http://127.0.0.1:{port}"), eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn")
    yield svc, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_reader_signs_up_in_a_browser_and_another_sites_page_cannot(browser, served_site, feed_server,
                                                                      smtp_server):
    svc, base = served_site
    page = browser.new_page()

    # Our own form, in a real browser: its POST carries our Origin (the page's referrer policy keeps it).
    page.goto(base + "/")
    page.fill("input[name=email]", "reader@example.com")
    page.check("input[name=newsletter][value=daily]")  # nothing is ticked for the reader
    page.click("button[type=submit]")
    assert "Check your inbox" in page.content()
    assert subscriber_by_email(svc, "reader@example.com").status == "pending"

    # Another site's page that posts our form the moment it loads, with a token its server fetched from us.
    harvested = form_fields(TestClient(create_app()), "/")["form_token"]
    attack = feed_server.serve("/win-a-prize.html", (
        f'<form id="f" method="post" action="{base}/subscribe">'
        f'<input name="form_token" value="{harvested}"><input name="email" value="victim@example.com">'
        '<input name="newsletter" value="daily"></form><script>document.getElementById("f").submit()</script>'
    ).encode(), **{"Content-Type": "text/html"})
    with page.expect_navigation(url=base + "/subscribe"):
        page.goto(attack)
    assert "Refused" in page.content()
    assert subscriber_by_email(svc, "victim@example.com") is None
    assert [m.recipients for m in smtp_server.messages] == [["reader@example.com"]]
