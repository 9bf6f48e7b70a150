"""Removing and adding on the desk in a real browser (Chromium driven by Playwright, the app on localhost): an
editor deletes a feed, archives and then deletes a newsletter (ticking the box its sent edition asks for),
connects a Mastodon account and disables it, and adds a subscriber; each removal behind a page that says what
happens first, and listed on the Removed page. Screenshots go to tests/screenshots/."""

from __future__ import annotations

from datetime import timedelta

from conftest import SHOTS, sign_in_browser
from desk_client import fresh_story
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.ingest import feeds
from syndicate.models import utcnow
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent

PASSWORD = "correct horse battery"


def newsroom(svc) -> None:
    """An editor, a feed with one story, and The Morning Briefing, whose edition #1 went out to one reader."""
    now = utcnow()
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        feed = feeds.add_feed(session, "https://news.example.com/feed/")
        morning = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                       from_address="news@example.com", cron="0 7 * * *")
        lists.add_newsletter(session, slug="weekly", name="The Weekly", from_address="news@example.com", cron=None)
        consent.subscribe(session, "reader@example.org", [morning.id], confirmed=True)
        story = fresh_story(session, now - timedelta(hours=1))
        story.feed_id = feed.id
        session.flush()
        sent = editions.create_edition(session, morning, svc.settings, now=now, articles=[story])
        sent.status, sent.started_at, sent.sent_at = "sent", now, now


def test_an_editor_removes_a_feed_and_a_newsletter_after_reading_what_happens(browser, served, svc):
    newsroom(svc)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk")
    page.click("header a:has-text('Editions')")
    page.wait_for_url(f"{served}/desk/editions")

    page.click("header a:has-text('Feeds')")
    page.click("#feed-1 button:has-text('Delete…')")
    page.wait_for_url("**/desk/feeds/1/delete*")  # a GET form: the address ends in "?"
    assert "its 1 story is kept, without a feed: 1 went out in editions" in page.locator("#consequences").inner_text()
    page.screenshot(path=str(SHOTS / "confirm-delete-feed.png"), full_page=True)
    page.click("#confirm button:has-text('Delete')")
    page.wait_for_url(f"{served}/desk/feeds")
    assert "No feeds yet" in page.locator("#feeds").inner_text()

    page.goto(f"{served}/desk/newsletters/morning")
    page.click("#actions button:has-text('Archive…')")
    assert "sign-ups stop" in page.locator("#consequences").inner_text()
    page.click("#confirm button:has-text('Archive')")
    page.wait_for_url(f"{served}/desk/newsletters/morning")
    assert page.locator("h1 .status").inner_text() == "archived"
    assert page.locator("#archived").is_visible()

    page.click("#actions button:has-text('Delete…')")
    assert "archive it instead" in page.locator("#needs-force").inner_text()
    page.click("#confirm button:has-text('Delete')")  # without the box: refused, nothing deleted
    assert "needs --force" in page.locator(".error[role=alert]").first.inner_text()
    page.check("#force")
    page.click("#confirm button:has-text('Delete')")
    page.wait_for_url(f"{served}/desk/newsletters")
    assert "The Morning Briefing" not in page.locator("main").inner_text()

    page.click("header a:has-text('Removed')")
    rows = page.locator("#removals tr")
    assert rows.count() == 4  # a header; deleted, archived, deleted — the newest first
    assert "newsletter morning" in rows.nth(1).inner_text() and "ada" in rows.nth(1).inner_text()
    assert "feed https://news.example.com/feed/" in rows.nth(3).inner_text()
    page.screenshot(path=str(SHOTS / "removals.png"), full_page=True)


def test_an_editor_connects_and_disables_an_account_and_adds_a_subscriber(browser, served, svc):
    newsroom(svc)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk")
    page.click("header a:has-text('Accounts')")
    page.wait_for_url(f"{served}/desk/accounts")

    # Only the chosen network's fields show.
    assert page.locator("#secrets-mastodon").is_visible() and not page.locator("#secrets-x").is_visible()
    page.select_option("#network", "x")
    assert page.locator("#secrets-x").is_visible() and not page.locator("#secrets-mastodon").is_visible()
    page.select_option("#network", "mastodon")
    page.fill("#connect input[name=name]", "newsroom")
    page.fill("#connect input[name=instance]", "https://social.example")
    page.click("#connect button[type=submit]")
    assert "a mastodon account needs access_token" in page.locator("#connect-error").inner_text()
    assert page.locator("#connect input[name=instance]").input_value() == "https://social.example"
    page.fill("#connect input[name=mastodon_access_token]", "sekrit-789")
    page.click("#connect button[type=submit]")
    page.wait_for_url(f"{served}/desk/accounts?connected=newsroom*")
    assert "mastodon (live)" in page.locator("#account-newsroom").inner_text()
    assert "sekrit-789" not in page.content()
    page.screenshot(path=str(SHOTS / "accounts.png"), full_page=True)

    page.click("#account-newsroom button:has-text('Disable…')")
    assert "nothing more is planned or posted on it" in page.locator("#consequences").inner_text()
    page.click("#confirm button:has-text('Disable')")
    page.wait_for_url(f"{served}/desk/accounts#account-newsroom")
    assert page.locator("#account-newsroom .status").inner_text() == "disabled"
    assert page.locator("#account-newsroom button:has-text('Enable')").is_visible()

    page.click("header a:has-text('Subscribers')")
    page.click("#add-subscriber summary")
    page.fill("#add input[name=email]", "zoe@example.org")
    page.fill("#add input[name=name]", "Zoë")
    page.check("#add input[name=newsletter][value=weekly]")
    page.check("#vouched")
    page.click("#add button[type=submit]")
    page.wait_for_url(f"{served}/desk/subscribers/*")
    assert "zoe@example.org" in page.locator("h1").inner_text()
    assert "consent vouched for by the editor" in page.locator("main").inner_text()
