"""A reader's rights on the desk, in a real browser (Chromium driven by Playwright, the app on localhost): an
editor downloads everything held about a reader, then erases their data behind a page that says what it
deletes; the erasure is on the Removed page without the address, and the newsletter's welcome mail is a box on
its settings form. Screenshots go to tests/screenshots/."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from conftest import SHOTS, sign_in_browser, subscriber_by_email
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.models import ErasedAddress
from syndicate.newsletters import lists
from syndicate.subscribers import consent, csv_files

PASSWORD = "correct horse battery"


def newsroom(svc) -> int:
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        morning = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                       from_address="news@example.com", cron="0 7 * * *")
        return consent.subscribe(session, "grace@example.org", [morning.id], name="Grace",
                                 confirmed=True, source="cli").subscriber.id


def test_an_editor_exports_then_erases_a_readers_data_after_reading_what_it_deletes(browser, served, svc):
    subscriber_id = newsroom(svc)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    sign_in_browser(page, served, "ada", PASSWORD, f"/desk/subscribers/{subscriber_id}")

    with page.expect_download() as download:
        page.click("#export-data")
    data = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert data["format"] == "syndicate-personal-data/1" and data["subscriber"]["email"] == "grace@example.org"

    page.click("#erase")
    page.wait_for_url(f"{served}/desk/subscribers/{subscriber_id}/erase")
    said = page.locator("#consequences").inner_text()
    assert "can't be undone" in said and "no import or editor adds it back" in said
    page.screenshot(path=str(SHOTS / "confirm-erase-subscriber.png"), full_page=True)
    page.click("#confirm button:has-text('Erase')")
    page.wait_for_url(f"{served}/desk/removals")

    row = page.locator("#removals tr").nth(1).inner_text()
    assert f"subscriber #{subscriber_id}" in row and "erased" in row and "ada" in row
    assert "grace" not in page.locator("main").inner_text().lower()
    assert subscriber_by_email(svc, "grace@example.org") is None
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(ErasedAddress)) == 1
        report = csv_files.import_csv(session, "email\ngrace@example.org\n", [1])
    assert report.added == 0 and report.skipped[0][2] == "erased at the reader's request, skipped"

    page.goto(f"{served}/desk/subscribers")  # the desk's own add form refuses the address too
    page.click("#add-subscriber summary")
    page.fill("#add input[name=email]", "grace@example.org")
    page.locator("#add input[name=vouched]").check()
    page.click("#add button:has-text('Add')")
    assert "erased at the reader's request" in page.locator("#add-error").inner_text()
    assert subscriber_by_email(svc, "grace@example.org") is None


def test_an_editor_turns_on_a_newsletters_welcome_mail(browser, served, svc):
    newsroom(svc)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/newsletters/morning")

    page.check("#settings input[name=welcome]")
    page.click("#settings button:has-text('Save')")
    page.wait_for_url(f"{served}/desk/newsletters/morning?saved=1")

    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").welcome is True
    assert page.locator("#settings input[name=welcome]").is_checked()
