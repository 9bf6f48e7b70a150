"""The new parts of the desk in a real browser (Chromium through Playwright): a story found and added to an
edition, an intro, a blurb and a sponsor written and shown in the preview; a one-off draft made from the
newsletter's page; a story sent as breaking news, asked first. Screenshots go to tests/screenshots/."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from conftest import SHOTS, sign_in_browser, wait_for
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.models import Article, Edition, utcnow
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent

PASSWORD = "correct horse battery"


def newsroom(svc) -> tuple[int, int]:
    """A newsletter taking only Local stories, with a schedule; a draft of its Local story; a World story."""
    now = utcnow()
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        newsletter = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                          from_address="news@example.com", cron="0 7 * * *",
                                          timezone="Europe/Berlin", categories_include=["Local"],
                                          now=now - timedelta(hours=1))
        consent.subscribe(session, "reader@example.com", [newsletter.id], confirmed=True)
        for i, (title, category) in enumerate((("Council approves the riverside library", "Local"),
                                               ("Storm season starts early in the Atlantic", "World"))):
            session.add(Article(identity=f"s{i}", url=f"https://news.example.com/{i}/", title=title,
                                lead=f"What happened ({i}).", content_hash=str(i), categories=[category],
                                published_at=now - timedelta(minutes=i), first_seen_at=now))
        session.flush()
        draft = editions.create_edition(session, newsletter, svc.settings, now=now, kind="one-off")
        world = session.scalar(select(Article.id).where(Article.identity == "s1"))
        return draft.id, world


def test_an_editor_adds_a_story_and_their_own_words_and_the_preview_shows_them(browser, served, svc):
    edition_id, _ = newsroom(svc)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    sign_in_browser(page, served, "ada", PASSWORD, f"/desk/editions/{edition_id}")

    # Any story, found by a word of its title, whatever the newsletter's filters say.
    page.fill("#find input[name=q]", "storm")
    page.click("#find button")
    page.wait_for_load_state()
    page.click("#found button:has-text('Add')")
    page.wait_for_load_state()
    assert page.locator("#stories tr").count() == 2
    assert "Storm season" in page.locator("#stories tr:last-child").inner_text()

    page.fill("#intro", "Good *morning*: a library and a storm.")
    page.locator("#stories tr:last-child textarea.blurb").fill("Far away, but **it reaches us** by Friday.")
    page.fill("input[name=sponsor_text]", "Bristol Bikes: a week's hire free")
    page.fill("input[name=sponsor_url]", "https://bikes.example/week")
    page.click("button[value=subject]")
    page.wait_for_load_state()
    preview = page.frame_locator("#preview-desktop")
    assert preview.locator("em", has_text="morning").count() == 1
    assert preview.locator("strong", has_text="it reaches us").count() == 1
    assert preview.locator("a[href='https://bikes.example/week']").count() == 1
    assert page.locator("#intro").input_value() == "Good *morning*: a library and a storm."

    # A link that isn't a web address is refused, saying why; what was saved stays.
    page.fill("input[name=sponsor_url]", "javascript:alert(1)")
    with page.expect_navigation() as answer:
        page.click("button[value=subject]")
    assert answer.value.status == 400
    assert "is not a web address" in page.locator("p.error").inner_text()
    page.locator("#preview-desktop").screenshot(path=str(SHOTS / "edition-with-words.png"))
    page.screenshot(path=str(SHOTS / "edition-editing.png"), full_page=True)


def test_an_editor_makes_a_one_off_draft_beside_the_regular_schedule(browser, served, svc):
    edition_id, _ = newsroom(svc)
    with transaction(svc.Session) as session:  # the draft above gave up its story: a new one for this draft
        session.add(Article(identity="s9", url="https://news.example.com/9/", title="Bins collected late",
                            lead="Lead.", content_hash="9", categories=["Local"], published_at=utcnow(),
                            first_seen_at=utcnow()))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, "/desk/newsletters/morning")
    page.click("#one-off button")
    page.wait_for_url(f"{served}/desk/editions/*")
    assert "one-off edition" in page.locator(".facts").inner_text()
    assert page.locator("#edition-status").inner_text() == "draft"
    assert "Bins collected late" in page.locator("#stories").inner_text()


def test_an_editor_sends_a_story_as_breaking_news_after_saying_yes(browser, served, svc):
    _, world = newsroom(svc)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in_browser(page, served, "ada", PASSWORD, f"/desk/articles/{world}")
    asked = []

    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#breaking button")
    wait_for(lambda: asked, 10, "the confirmation")
    assert asked[0].startswith("Send this story now, on its own, to every reader")
    with transaction(svc.Session) as session:
        assert session.scalar(select(Edition).where(Edition.kind == "breaking")) is None

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#breaking button")
    page.wait_for_selector("#breaking-sent")
    assert "The Morning Briefing #2" in page.inner_text("#breaking-sent")
    page.screenshot(path=str(SHOTS / "article-breaking.png"), full_page=True)
    with transaction(svc.Session) as session:
        sent = session.scalar(select(Edition).where(Edition.kind == "breaking"))
        assert [i.article_id for i in sent.items] == [world] and sent.started_at is not None
