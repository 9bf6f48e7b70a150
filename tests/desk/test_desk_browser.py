"""The desk in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, installed by
.ci/run with apt; no browser download) against the app served by uvicorn on localhost. Screenshots go to
tests/screenshots/ (git-ignored) for a person to look at."""

from __future__ import annotations

from datetime import timedelta

from conftest import SHOTS, sign_in_browser, wait_in_page
from desk_client import dry_run_x_account, fresh_story
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.ingest import feeds
from syndicate.models import utcnow
from syndicate.newsletters import editions, lists
from syndicate.social import posts

PASSWORD = "correct horse battery"


def newsroom(svc, sample_feed) -> None:
    now = utcnow()
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        newsletter = lists.add_newsletter(session, max_age_hours=0, slug="morning", name="The Morning Briefing",
                                          from_address="news@example.com", cron=None, timezone="Europe/Berlin")
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        edition = editions.create_edition(session, newsletter, svc.settings, now=now, status="draft")
        editions.schedule(session, edition, now + timedelta(hours=20))
        dry_run_x_account(session, now)
        fresh_story(session, now)
        posts.plan(session, svc.settings, now)


def test_an_editor_steers_the_day_from_the_desk(browser, served, svc, sample_feed):
    newsroom(svc, sample_feed)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    page.goto(served + "/desk")
    assert "/desk/login" in page.url
    sign_in_browser(page, served, "ada", PASSWORD)
    assert page.locator("h1").inner_text() == "Today"
    assert "Council approves the riverside library" in page.locator("#queue").inner_text()
    assert "scheduled" in page.locator("#editions").inner_text()
    page.screenshot(path=str(SHOTS / "desk-today.png"), full_page=True)

    # The kill switch, and back.
    page.fill("#kill-switch input[name=reason]", "election night")
    page.click("#kill-switch button")
    assert "All social posting is paused — election night" in page.locator("#kill-switch").inner_text()
    page.screenshot(path=str(SHOTS / "desk-paused.png"), full_page=True)
    page.click("#kill-switch button")
    assert "Social posting is on" in page.locator("#kill-switch").inner_text()

    # Pause the scheduled edition, then resume it.
    page.click("#editions button:has-text('Pause')")
    assert "paused" in page.locator("#editions").inner_text()
    page.click("#editions button:has-text('Resume')")
    assert "scheduled" in page.locator("#editions").inner_text()

    # Edit a teaser and watch the counter count by X's rules (CJK weighs 2).
    page.click("#queue a:has-text('Edit')")
    counter = page.locator("#counter")
    link = next(word for word in page.locator("#text").input_value().split() if word.startswith("https://"))
    page.fill("#text", f"図書館 {link}")
    wait_in_page(page, "document.getElementById('counter').textContent.startsWith('30/')")
    assert counter.inner_text() == "30/280"  # 3 × 2 + 1 + 23
    page.fill("#text", "長" * 150 + " " + link)
    wait_in_page(page, "document.getElementById('counter').classList.contains('over')")
    assert counter.inner_text() == "324/280"
    page.screenshot(path=str(SHOTS / "desk-teaser-over.png"), full_page=True)
    page.fill("#text", f"Read it: {link}")
    wait_in_page(page, "!document.getElementById('counter').classList.contains('over')")
    page.click("button[value=save]")
    assert page.locator("#text").input_value() == f"Read it: {link}"

    # At phone width the day still reads.
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(served + "/desk")
    assert phone.locator("h1").inner_text() == "Today"
    phone.screenshot(path=str(SHOTS / "desk-today-phone.png"), full_page=True)
