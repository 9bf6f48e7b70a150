"""The edition page in a real browser (Chromium through Playwright, against the app on localhost): the preview
at desktop and phone widths, a new subject the preview shows, a story moved, the edition scheduled (and then
on Today), paused and resumed, and its counts following the send. Screenshots go to tests/screenshots/."""

from __future__ import annotations

from datetime import timedelta

from conftest import SHOTS, sign_in_browser, wait_in_page
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending
from syndicate.delivery.batches import send_batch
from syndicate.desk import editors
from syndicate.models import Article, Edition, utcnow
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent

PASSWORD = "correct horse battery"


def draft(svc) -> int:
    now = utcnow()
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        newsletter = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                          from_address="news@example.com", cron=None, timezone="Europe/Berlin",
                                          now=now - timedelta(hours=1))
        consent.subscribe(session, "reader@example.com", [newsletter.id], confirmed=True)
        for i, title in enumerate(("Council approves the riverside library", "Tram line 4 reopens on Monday",
                                   "The harbour festival returns")):
            session.add(Article(identity=f"s{i}", url=f"https://news.example.com/{i}/", title=title,
                                lead=f"What happened, in one line ({i}).", content_hash=str(i), categories=["Local"],
                                published_at=now - timedelta(minutes=i), first_seen_at=now))
        session.flush()
        return editions.create_edition(session, newsletter, svc.settings, now=now, status="draft").id


def headlines(page, frame: str) -> list[str]:
    return page.frame_locator(frame).locator("h2").all_inner_texts()


def test_an_editor_previews_edits_schedules_pauses_and_resumes_an_edition(browser, served, svc):
    edition_id = draft(svc)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    sign_in_browser(page, served, "ada", PASSWORD, f"/desk/editions/{edition_id}")
    assert page.locator("h1").inner_text().startswith("The Morning Briefing #1")

    # The preview, as a reader gets it, at both widths.
    for frame in ("#preview-desktop", "#preview-phone"):
        assert page.frame_locator(frame).locator("h1").inner_text() == "The Morning Briefing"
    assert page.frame_locator("#preview-desktop").locator("html").evaluate("() => window.innerWidth") == 700
    assert page.frame_locator("#preview-phone").locator("html").evaluate("() => window.innerWidth") == 375
    page.locator("#preview-desktop").screenshot(path=str(SHOTS / "edition-desktop.png"))
    page.locator("#preview-phone").screenshot(path=str(SHOTS / "edition-phone.png"))
    page.screenshot(path=str(SHOTS / "edition-page.png"), full_page=True)

    # A subject of the editor's own: the preview shows it.
    page.fill("#subject", "Your Tuesday: library, trams, festival")
    page.click("button[value=subject]")
    page.wait_for_load_state()
    assert page.locator("#preview-subject").inner_text() == "Your Tuesday: library, trams, festival"
    preview = page.locator("#preview-desktop").element_handle().content_frame()
    preview.wait_for_load_state()
    assert preview.title() == "Your Tuesday: library, trams, festival"

    # The first story moves down a place, in the list and in the preview.
    page.click("#stories tr:first-child button[name=down]")
    page.wait_for_load_state()
    assert page.locator("#stories tr:first-child").inner_text().startswith("1\tTram line 4")
    assert headlines(page, "#preview-phone")[:2] == ["Tram line 4 reopens on Monday",
                                                     "Council approves the riverside library"]

    # Scheduled for tomorrow morning, in the editor's zone: Today lists it.
    tomorrow = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT07:30")
    page.fill("input[name=at]", tomorrow)
    page.click("#actions button:has-text('Schedule')")
    page.wait_for_load_state()
    assert page.locator("#edition-status").inner_text() == "scheduled"
    page.goto(served + "/desk")
    row = page.locator("#editions tr", has_text="The Morning Briefing #1")
    assert "scheduled" in row.inner_text() and "Your Tuesday" in row.inner_text()

    # Paused and resumed on its own page.
    page.goto(served + f"/desk/editions/{edition_id}")
    page.click("#actions button:has-text('Pause')")
    page.wait_for_load_state()
    assert page.locator("#edition-status").inner_text() == "paused"
    page.click("#actions button:has-text('Resume')")
    page.wait_for_load_state()
    assert page.locator("#edition-status").inner_text() == "scheduled"
    page.screenshot(path=str(SHOTS / "edition-scheduled.png"), full_page=True)

    # It starts going out: the counts follow the send without a reload.
    with transaction(svc.Session) as session:
        batches = sending.start(session, session.get(Edition, edition_id), svc.settings, utcnow())
    page.reload()
    assert page.locator("[data-count=pending]").inner_text() == "1"
    for edition_, lo, hi in batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_, lo, hi, token="browser-test")
    with transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, utcnow())
    wait_in_page(page, "document.querySelector('[data-count=sent]').textContent === '1'")
    wait_in_page(page, "document.getElementById('edition-status').textContent === 'sent'")
    assert page.locator("[data-count=pending]").inner_text() == "0"
