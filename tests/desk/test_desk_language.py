"""An editor chooses a newsletter's language on the desk (its forms and its API), only among those with
translations; in a real browser, the choice is what readers then get."""

from __future__ import annotations

import re

import pytest

from conftest import SHOTS, sign_in_browser
from desk_client import PASSWORD, add_editor, api_headers, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.newsletters import lists


@pytest.fixture
def client(svc):
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="morning", name="The Morning Briefing", from_address="news@example.com",
                             timezone="Europe/Berlin")
    add_editor(svc)
    return desk_client()


def language_of(svc, slug: str = "morning") -> str:
    with transaction(svc.Session) as session:
        return lists.get_newsletter(session, slug).language


def settings_form(**changes) -> dict:
    form = dict(name="The Morning Briefing", from_name="The Morning Briefing", from_address="news@example.com",
                reply_to="", subject_template="{{ top.title }}", template="edition", cron="0 7 * * *",
                timezone="Europe/Berlin", max_items="20", categories_include="", categories_exclude="",
                breaking_categories="")
    return form | changes


def test_the_forms_offer_the_languages_with_translations_and_keep_the_choice(client, svc):
    token = sign_in(client)
    page = client.get("/desk/newsletters/morning").text
    options = re.findall(r'<option value="(\w+)"( selected)?>([^<]+)</option>', page.split('id="language"')[1])
    assert [(code, label) for code, _, label in options][:3] == [("en", "English"), ("de", "Deutsch"),
                                                                   ("fr", "Français")]
    assert [code for code, selected, _ in options if selected] == ["en"]

    assert client.post("/desk/newsletters/morning", data=settings_form(csrf=token, language="de")).status_code == 303
    assert language_of(svc) == "de"
    assert '<option value="de" selected>Deutsch</option>' in client.get("/desk/newsletters/morning").text
    # A form without the field (a script's) leaves the language as it is.
    assert client.post("/desk/newsletters/morning", data=settings_form(csrf=token)).status_code == 303
    assert language_of(svc) == "de"

    made = client.post("/desk/newsletters", data=dict(
        csrf=token, slug="matin", name="Le Matin", from_address="matin@example.com", cron="", timezone="Europe/Paris",
        first_fill="none", language="fr"))
    assert made.status_code == 303 and language_of(svc, "matin") == "fr"


@pytest.mark.parametrize("given", ["xx", "<script>alert(1)</script>", "de\r\nX-Injected: 1", "../de"])
def test_a_language_without_translations_is_refused_saying_which_there_are(client, svc, given):
    token = sign_in(client)
    refused = client.post("/desk/newsletters/morning", data=settings_form(csrf=token, language=given,
                                                                          name="The Early Briefing"))
    assert refused.status_code == 400
    error = re.search(r'<p class="error" role="alert" id="form-error">(.*?)</p>', refused.text, re.S).group(1)
    assert "has no translations here; choose one of en (English), de (Deutsch), fr (Français)" in error
    assert "<script>" not in refused.text.split('id="form-error"')[1].split("</p>")[0]
    assert 'value="The Early Briefing"' in refused.text  # what was typed is still there
    assert language_of(svc) == "en"

    made = client.post("/desk/newsletters", data=dict(csrf=token, slug="other", name="Other", language=given,
                                                      from_address="o@example.com", timezone="UTC", first_fill="none"))
    assert made.status_code == 400 and "has no translations here" in made.text


def test_the_api_sets_and_refuses_a_language(client, svc):
    token = api_headers(svc)
    made = client.post("/api/v1/newsletters", headers=token, json=dict(
        slug="morgen", name="Der Morgen", from_address="morgen@example.com", language="de"))
    assert made.status_code == 201 and made.json()["language"] == "de"
    changed = client.patch("/api/v1/newsletters/morning", headers=token, json={"language": "fr"})
    assert changed.status_code == 200 and changed.json()["language"] == "fr"
    refused = client.patch("/api/v1/newsletters/morning", headers=token, json={"language": "klingon"})
    assert refused.status_code == 422 and "choose one of en (English)" in refused.json()["error"]
    assert language_of(svc) == "fr"


def test_an_editor_picks_german_in_the_browser_and_readers_get_the_archive_in_german(browser, served, svc):
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="morning", name="The Morning Briefing", from_address="news@example.com",
                             timezone="Europe/Berlin")
    add_editor(svc)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/newsletters/morning")

    page.select_option("#language", "de")
    page.click("#settings button[type=submit]")
    page.wait_for_url(served + "/desk/newsletters/morning?saved=1")
    assert page.locator("#language").input_value() == "de"
    page.screenshot(path=str(SHOTS / "desk-newsletter-language.png"), full_page=True)
    assert language_of(svc) == "de"

    reader = browser.new_page()  # English by default: the archive is the newsletter's, not the browser's
    reader.goto(served + "/n/morning")
    assert reader.locator("html").get_attribute("lang") == "de"
    assert reader.locator("main").inner_text().count("Es sind noch keine Ausgaben erschienen.") == 1
