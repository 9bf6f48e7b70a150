"""The calendar and a newsletter's page in a real browser (Chromium through Playwright, as in
test_desk_browser.py): prepare an edition, see it on the week, pause and resume it, the newsletter and a
teaser from the calendar; the newsletter page at phone width. Screenshots go to tests/screenshots/."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from conftest import SHOTS, sign_in_browser
from desk_client import dry_run_x_account, fresh_story
from syndicate.db import transaction
from syndicate.desk import agenda, editors
from syndicate.ingest import feeds
from syndicate.models import Edition, utcnow
from syndicate.newsletters import editions, lists
from syndicate.newsletters.schedules import next_run
from syndicate.social import posts

expect = pytest.importorskip("playwright.sync_api").expect  # the `browser` fixture says how to install it
PASSWORD = "correct horse battery"


def newsroom(svc, sample_feed) -> None:
    now = utcnow()
    with transaction(svc.Session) as session:
        editors.set_timezone(editors.add(session, "ada", PASSWORD), "Europe/Berlin")
        lists.add_newsletter(session, max_age_hours=0,
                             slug="morning", name="The Morning Briefing", from_address="news@example.com",
                             cron="0 7 * * 1-5", timezone="Europe/Berlin")
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        dry_run_x_account(session, now)
        fresh_story(session, now)
        posts.plan(session, svc.settings, now)


def projected_slots(svc, edition_id: int) -> int:
    """How many 07:00 weekday slots the calendar's seven days in Berlin still have to come, less the one the
    prepared edition stands for: 3 to 5, by the day and hour the test runs."""
    zone = ZoneInfo("Europe/Berlin")
    now = utcnow()
    start, end = agenda.window(now, 7, zone)
    with transaction(svc.Session) as session:
        taken = session.get(Edition, edition_id).slot
    slots, slot = [], next_run("0 7 * * 1-5", "Europe/Berlin", now)
    while slot < end:
        slots.append(slot)
        slot = next_run("0 7 * * 1-5", "Europe/Berlin", slot)
    assert taken in slots
    return len(slots) - 1


def fits(page) -> bool:
    """Nothing sticks out sideways: the page reads without scrolling left and right."""
    return page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]



def test_an_editor_plans_the_week_from_the_calendar(browser, served, svc, sample_feed):
    newsroom(svc, sample_feed)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/newsletters/morning")
    assert "At 07:00 on Monday through Friday, Europe/Berlin time" in page.locator("#schedule").inner_text()
    assert page.locator("#next-sends li").count() == 5

    # Prepare the next edition: it opens on its own page; then schedule it for this afternoon.
    page.click("button:has-text('Prepare the next edition now')")
    page.wait_for_url(re.compile(r".*/desk/editions/\d+$"))
    edition_id = int(page.url.rsplit("/", 1)[1])
    with transaction(svc.Session) as session:
        edition = session.get(Edition, edition_id)
        editions.schedule(session, edition, utcnow() + timedelta(hours=3))
        subject = edition.subject

    page.goto(served + "/desk")
    calendar = page.locator("#calendar")
    assert page.locator("#calendar .day").count() == 7
    entry = calendar.locator(f".entry[data-kind=edition][data-id='{edition_id}']")
    expect(entry).to_contain_text(subject[:40])
    expect(entry.locator(".status")).to_have_text("scheduled")
    # The weekdays' 07:00 still to come this week, not cut yet: the prepared edition keeps its slot's place.
    assert calendar.locator(".entry.projected").count() == projected_slots(svc, edition_id)
    expect(calendar.locator(".entry[data-kind=teaser]").first).to_contain_text("Council approves")

    # One click each way, staying on the calendar.
    entry.locator("button:has-text('Pause')").click()
    expect(entry.locator(".status")).to_have_text("paused")
    page.screenshot(path=str(SHOTS / "calendar.png"), full_page=True)
    entry.locator("button:has-text('Resume')").click()
    expect(entry.locator(".status")).to_have_text("scheduled")
    assert page.url == served + "/desk"

    # The newsletter's schedule: every projection pauses with it, and comes back.
    calendar.locator(".entry.projected button:has-text('Pause newsletter')").first.click()
    expect(calendar.locator(".entry.projected .status").first).to_have_text("paused")
    assert set(calendar.locator(".entry.projected .status").all_inner_texts()) == {"paused"}
    expect(entry.locator(".status")).to_have_text("scheduled")  # an edition already made keeps its time
    calendar.locator(".entry.projected button:has-text('Resume newsletter')").first.click()
    expect(calendar.locator(".entry.projected .status").first).to_have_text("scheduled")

    # A teaser: hold, then release, from the calendar.
    teaser = calendar.locator(".entry[data-kind=teaser]").first
    teaser_id = teaser.get_attribute("data-id")
    teaser.locator("button:has-text('Hold')").click()
    held = calendar.locator(f".entry[data-kind=teaser][data-id='{teaser_id}']")
    expect(held.locator(".status")).to_have_text("held")
    held.locator("button:has-text('Release')").click()
    expect(held.locator(".status")).to_have_text("pending")
    assert page.url == served + "/desk"

    # At phone width: the calendar and the newsletter's page read without sideways scrolling.
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(served + "/desk")
    expect(phone.locator("#calendar .entry").first).to_be_visible()
    assert fits(phone)
    phone.screenshot(path=str(SHOTS / "calendar-phone.png"), full_page=True)
    phone.goto(served + "/desk/newsletters/morning")
    assert phone.locator("h1").inner_text().startswith("The Morning Briefing")
    phone.screenshot(path=str(SHOTS / "newsletter-phone.png"), full_page=True)
    assert fits(phone)  # the screenshot above shows what sticks out, if anything


def test_a_typed_schedule_is_explained_before_it_is_saved(browser, served, svc, sample_feed):
    newsroom(svc, sample_feed)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/newsletters/morning")
    page.fill("#cron", "30 6 * * 6")
    expect(page.locator("#schedule-words")).to_have_text("At 06:30 on Saturday, Europe/Berlin time")
    expect(page.locator("#next-sends li")).to_have_count(5)
    expect(page.locator("#next-sends li").first).to_contain_text("Sat")
    page.fill("#cron", "30 6 * *")
    expect(page.locator("#schedule-words")).to_contain_text("bad cron expression")
    page.click("#settings button[type=submit]")  # saved anyway: refused, with what was typed kept
    expect(page.locator("#form-error")).to_contain_text("e.g. '0 7 * * *' for 07:00 daily")
    assert page.locator("#cron").input_value() == "30 6 * *"
