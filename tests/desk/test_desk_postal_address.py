"""The postal address on the desk: a banner on Today and on a newsletter's page while its mail would go out
without one (CAN-SPAM asks for one in every message), and the newsletter form that sets it, lines kept and
hostile text made harmless."""

from __future__ import annotations

import pytest

from conftest import configured
from desk_client import add_editor, api_headers, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.newsletters import lists


def settings_form(**changes) -> dict:
    form = dict(name="The Morning Briefing", from_name="The Morning Briefing", from_address="news@example.com",
                reply_to="", subject_template="{{ top.title }}", template="edition", cron="0 7 * * *",
                timezone="Europe/Berlin", max_items="20", categories_include="", categories_exclude="",
                breaking_categories="")
    return form | changes


@pytest.fixture
def client(svc):
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="morning", name="The Morning Briefing", from_address="news@example.com")
        lists.add_newsletter(session, slug="evening", name="The Evening Wrap", from_address="news@example.com",
                             postal_address="Example News\n1 Main St\nSpringfield, IL 62701")
        archived = lists.add_newsletter(session, slug="old", name="The Old One", from_address="news@example.com")
        archived.status = "archived"  # sends nothing: no warning about it
    add_editor(svc)
    return desk_client()


def banner(page: str) -> str:
    start = page.find('id="no-postal-address"')
    return page[start:page.find("</div>", start)] if start >= 0 else ""


def test_today_names_each_sending_newsletter_without_a_postal_address(client):
    sign_in(client)
    warned = banner(client.get("/desk").text)
    assert "No postal address" in warned and "CAN-SPAM" in warned and "SYNDICATE_POSTAL_ADDRESS" in warned
    assert 'href="/desk/newsletters/morning#postal"' in warned
    assert "Evening" not in warned and "Old One" not in warned
    assert not banner(client.get("/desk/newsletters/evening").text)
    assert "No postal address" in banner(client.get("/desk/newsletters/morning").text)


def test_an_editor_gives_the_address_in_the_form_and_the_banners_go(client, svc):
    token = sign_in(client)
    saved = client.post("/desk/newsletters/morning", data=settings_form(
        csrf=token, postal_address="Example News\r\n\r\n1 Main St\r\nSpringfield, IL 62701  "))
    assert saved.status_code == 303, saved.text
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").postal_address == \
            "Example News\n1 Main St\nSpringfield, IL 62701"  # lines kept, blank ones and trailing spaces gone
    assert not banner(client.get("/desk").text)
    page = client.get("/desk/newsletters/morning").text
    assert not banner(page)
    assert "Example News\n1 Main St\nSpringfield, IL 62701</textarea>" in page
    # Blank again: back to the default, which is unset: warned again.
    assert client.post("/desk/newsletters/morning", data=settings_form(csrf=token)).status_code == 303
    assert "The Morning Briefing" in banner(client.get("/desk").text)


def test_the_default_address_from_the_environment_silences_every_banner(make_settings, tmp_path):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'd.db'}",
                                   postal_address="Example News, 1 Main St, Springfield"))
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="morning", name="The Morning Briefing", from_address="news@example.com")
    add_editor(svc)
    client = desk_client()
    sign_in(client)
    assert not banner(client.get("/desk").text)
    page = client.get("/desk/newsletters/morning").text
    assert not banner(page) and "the default, Example News, 1 Main St, Springfield" in page


def test_a_hostile_address_is_escaped_on_the_page_and_a_novel_is_refused_keeping_what_was_typed(client, svc):
    token = sign_in(client)
    hostile = "<script>alert(1)</script></textarea><b>x</b>\nBcc: victim@example.org"
    assert client.post("/desk/newsletters/morning", data=settings_form(csrf=token, postal_address=hostile)
                       ).status_code == 303
    page = client.get("/desk/newsletters/morning").text
    assert "<script>alert(1)" not in page and "</textarea><b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/textarea&gt;" in page

    novel = "\n".join(f"line {n}" for n in range(9))
    refused = client.post("/desk/newsletters/morning", data=settings_form(csrf=token, postal_address=novel))
    assert refused.status_code == 400
    assert "at most 8 lines and 500 characters" in refused.text and "line 8</textarea>" in refused.text
    too_long = client.post("/desk/newsletters/morning", data=settings_form(csrf=token, postal_address="x" * 501))
    assert too_long.status_code == 400 and "at most 8 lines" in too_long.text


def test_the_api_sets_and_shows_the_address_and_today_lists_who_has_none(client, svc):
    headers = api_headers(svc)
    changed = client.patch("/api/v1/newsletters/morning", headers=headers,
                           json={"postal_address": "Example News\n1 Main St"})
    assert changed.status_code == 200 and changed.json()["postal_address"] == "Example News\n1 Main St"
    assert client.get("/api/v1/today", headers=headers).json()["no_postal_address"] == []
    client.patch("/api/v1/newsletters/morning", headers=headers, json={"postal_address": ""})
    assert [n["slug"] for n in client.get("/api/v1/today", headers=headers).json()["no_postal_address"]] == \
        ["morning"]
