"""Subscribers on the desk in a real browser (Chromium driven by Playwright, the app on localhost): import a
CSV with a bad row and read the report while the page's progress bar follows the import; read a subscriber's
timeline and let mail go to them again. Screenshots go to tests/screenshots/."""

from __future__ import annotations

from datetime import timedelta

from conftest import SHOTS, sign_in_browser, wait_in_page
from syndicate import tasks
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.models import Delivery, Subscriber, SubscriberImport, utcnow
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent, uploads

PASSWORD = "correct horse battery"
UPLOAD = "email,name\nzoe@example.org,Zoë\nnot-an-address,Nobody\nyan@example.org,Yan\n".encode()


def newsroom(svc) -> int:
    """An editor, two newsletters, and a reader with a story: a delivered edition, a bounce, a skipped one."""
    now = utcnow()
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        daily = lists.add_newsletter(session, slug="daily", name="The Daily", from_address="news@example.com")
        lists.add_newsletter(session, slug="weekly", name="The Weekly", from_address="news@example.com")
        ann = consent.subscribe(session, "ann@example.org", [daily.id], name="Ann Lovelace", confirmed=True,
                                source="web", now=now - timedelta(days=30)).subscriber
        sent = editions.create_edition(session, daily, svc.settings, now=now - timedelta(days=2))
        sent.subject = "Council approves the riverside library"
        later = editions.create_edition(session, daily, svc.settings, now=now - timedelta(days=1))
        session.flush()
        session.add(Delivery(edition_id=sent.id, subscriber_id=ann.id, status="sent", sent_at=now - timedelta(days=2)))
        consent.suppress(session, ann, "bounced", "smtp", "550 5.1.1 no such mailbox",
                         now=now - timedelta(days=1, hours=2))
        session.add(Delivery(edition_id=later.id, subscriber_id=ann.id, status="skipped",
                             created_at=now - timedelta(days=1), last_reply="bounced before sending"))
        return ann.id


def test_an_editor_imports_a_csv_with_a_bad_row_and_reads_the_report(browser, served, svc):
    newsroom(svc)
    SHOTS.mkdir(exist_ok=True)
    # No worker consumes the queue here: the test plays the worker, one address at a time, so the page's
    # progress bar has something to follow. (A real worker runs the task in test_desk_subscribers.py.)
    tasks.app.conf.task_always_eager = False
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/subscribers/import")

    page.set_input_files("input[name=file]", files=[{"name": "readers.csv", "mimeType": "text/csv", "buffer": UPLOAD}])
    page.check("input[name=newsletter][value=daily]")
    page.screenshot(path=str(SHOTS / "import-form.png"), full_page=True)
    page.click("#import button[type=submit]")
    page.wait_for_url(f"{served}/desk/subscribers/imports/*")
    import_id = int(page.url.rsplit("/", 1)[1])
    assert page.locator("#progress").get_attribute("value") == "0"
    assert "Waiting for a worker" in page.locator("#progress-text").inner_text()

    def the_bar_follows(subscriber_ids):
        # After each chunk's commit: the page, polling, shows how far the import is.
        with transaction(svc.Session) as session:
            done = session.get(SubscriberImport, import_id).done
        if done < 3:
            wait_in_page(page, f"document.getElementById('progress').value === {done}")
            assert page.locator("#progress-text").inner_text() == f"{done} of 3 rows"
            assert page.locator("#job-status").inner_text() == "running"
            page.screenshot(path=str(SHOTS / "import-progress.png"), full_page=True)

    finished = uploads.run_import(svc.Session, import_id, chunk=1, confirm=the_bar_follows)
    assert finished.status == "done"

    page.wait_for_selector("#problems")  # done: the page shows the report
    assert page.locator("#progress").get_attribute("value") == "3"
    counts = page.locator("#counts").inner_text()
    assert "2\nadded" in counts and "1\nnot imported" in counts and "2\nasked to confirm by mail" in counts
    bad_row = page.locator("#problems tr").nth(1).inner_text()
    assert bad_row.startswith("3\tnot-an-address\tnot an email address we can send to")
    page.screenshot(path=str(SHOTS / "import-report.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#report-csv")
    assert download.value.suggested_filename == f"import-{import_id}-rows-not-imported.csv"
    rows = open(download.value.path(), encoding="utf-8-sig").read().splitlines()
    assert rows[0] == "line,email,reason" and rows[1].startswith("3,not-an-address,")

    # The new reader is there, waiting to confirm.
    page.goto(served + "/desk/subscribers?q=zoe")
    assert "pending" in page.locator("#subscribers").inner_text()
    page.click("#subscribers a:has-text('zoe@example.org')")
    assert "imported" in page.locator("#timeline").inner_text()


def test_an_editor_reads_a_subscribers_timeline_and_lets_mail_go_again(browser, served, svc):
    ann = newsroom(svc)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/subscribers")
    page.fill("#search input[name=q]", "lovelace")
    page.click("#search button")
    assert page.locator("#counts").inner_text().startswith("1 subscriber matching “lovelace”")
    page.screenshot(path=str(SHOTS / "subscribers-search.png"), full_page=True)
    page.click("#subscribers a:has-text('ann@example.org')")
    page.wait_for_url(f"{served}/desk/subscribers/{ann}")
    lines = page.locator("#timeline tr").all_inner_texts()[1:]  # newest first
    assert [line.split("\t")[1] for line in lines] == ["skipped", "bounce", "delivered", "subscribed"]
    assert "bounced before sending" in lines[0] and "Council approves the riverside library" in lines[2]
    page.screenshot(path=str(SHOTS / "subscriber-timeline.png"), full_page=True)

    page.fill("#restore input[name=reason]", "the reader phoned: mailbox fixed")
    page.click("#restore button")
    page.wait_for_url(f"{served}/desk/subscribers/{ann}")
    assert page.locator("h1").inner_text().endswith("confirmed")
    restored = page.locator("#timeline tr").nth(1).inner_text()
    assert "via desk (ada) — was bounced: the reader phoned: mailbox fixed" in restored
    with transaction(svc.Session) as session:
        assert session.get(Subscriber, ann).status == "confirmed"
