"""Feeds and articles in a real browser (Playwright, Debian's Chromium) against the app on localhost, with
the feeds served by a real local HTTP server and the tasks run inline: an editor adds a feed, sees it
fetched and healthy next to one that fails, then opens an article and sees where it went."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

from conftest import SHOTS, sign_in_browser
from desk_client import dry_run_x_account
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.models import utcnow
from syndicate.newsletters import editions, lists

PASSWORD = "correct horse battery"


def rss(base: str) -> bytes:
    """Two fresh stories, the library one the newest (so it is teased first), whose pages live on the same
    local server (their link cards are fetched from there)."""
    items = "".join(
        f"<item><title>{title}</title><link>{base}/{slug}/</link><guid>{base}/{slug}/</guid>"
        f"<description>{lead}</description><category>Local</category>"
        f"<pubDate>{format_datetime(utcnow() - timedelta(minutes=n))}</pubDate></item>"
        for n, (slug, title, lead) in enumerate([
            ("library", "Council approves the riverside library", "The vote was 7 to 2."),
            ("ferry", "Ferry timetable changes for the summer", "Boats every 20 minutes from June."),
        ], start=1))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Riverside Gazette</title>'
            f"<link>{base}/</link>{items}</channel></rss>").encode()


def test_an_editor_adds_a_feed_sees_its_health_and_follows_an_article(browser, served, svc, feed_server):
    now = utcnow()
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                             from_address="news@example.com", cron=None)
        dry_run_x_account(session, now, age=timedelta(minutes=5))
    for slug in ("ferry", "library"):
        feed_server.serve(f"/{slug}/", b"<html><head><title>A story</title></head><body></body></html>",
                          **{"Content-Type": "text/html; charset=utf-8"})
    good = feed_server.serve("/feed.xml", rss(feed_server.base))
    broken = feed_server.serve("/broken.xml", b"upstream exploded", status=500)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/feeds")

    # A typo first: the form comes back with the message and what was typed.
    page.fill("#add-feed input[name=url]", "riverside-gazette.example/feed")
    page.click("#add-feed button")
    assert "is not a web address we can fetch" in page.locator(".error").inner_text()
    assert page.locator("#add-feed input[name=url]").input_value() == "riverside-gazette.example/feed"

    for url in (good, broken):
        page.fill("#add-feed input[name=url]", url)
        page.click("#add-feed button")
        page.wait_for_url("**/desk/feeds#feed-*")
    healthy, failing = page.locator("#feed-1"), page.locator("#feed-2")
    assert good in healthy.inner_text() and "ok" in healthy.locator(".status").inner_text()
    assert healthy.locator("td").nth(5).inner_text() == "2"
    assert "failing" in failing.inner_text() and "1 in a row" in failing.inner_text()
    assert "HTTP 500" in failing.locator(".last-error").inner_text()
    page.screenshot(path=str(SHOTS / "feeds.png"), full_page=True)

    failing.locator("button:has-text('Fetch now')").click()
    page.wait_for_url("**/desk/feeds#feed-2")
    assert "2 in a row" in page.locator("#feed-2").inner_text()

    # The newsletter's next edition takes the new stories; the teasers were planned when they arrived.
    with transaction(svc.Session) as session:
        edition = editions.create_edition(session, lists.get_newsletter(session, "morning"), svc.settings,
                                          status="draft")
        assert len(edition.items) == 2

    page.click("header a:has-text('Articles')")
    assert page.locator("#articles tr").count() == 3  # a header and two stories
    assert "1 edition draft" in page.locator("#articles").inner_text()
    page.click("#articles a:has-text('Council approves the riverside library')")
    assert page.locator("h1").inner_text() == "Council approves the riverside library"
    assert page.locator("#source a").get_attribute("href") == f"{feed_server.base}/library/"
    assert "The Morning Briefing" in page.locator("#editions").inner_text()
    assert page.locator("#editions a").get_attribute("href") == f"/desk/editions/{edition.id}"
    teaser = page.locator("#posts tr").nth(1)  # the newest story went first, at x-main's pace (dry run)
    assert "x-main" in teaser.inner_text() and teaser.locator(".status").first.inner_text() == "posted"
    # A dry run's record is a file on the server: shown as its path, never as a link (only web addresses are).
    assert "file://" in teaser.inner_text() and teaser.locator("a:has-text('On x')").count() == 0
    page.screenshot(path=str(SHOTS / "article-trail.png"), full_page=True)
    teaser.locator("a").first.click()
    page.wait_for_url("**/desk/posts/*")
    assert "Teaser for x-main" in page.locator("h1").inner_text()
