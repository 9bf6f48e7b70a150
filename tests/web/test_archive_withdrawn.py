"""A withdrawn story on the public archive, over HTTP: gone from the edition's web view (a short notice in its
place), from the archive's list and from the Atom feed, whose entry says it changed; the rest as mailed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.ingest import feeds
from syndicate.models import Article, Edition, EditionArticle
from syndicate.newsletters import lists, rendering
from syndicate.social import retraction
from syndicate.web.app import create_app

ATOM = "{http://www.w3.org/2005/Atom}"
WHEN = datetime(2026, 5, 5, 21, 30, tzinfo=UTC)  # already May 6 in Tokyo


@pytest.fixture
def client(site):
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def edition(site, sample_feed) -> dict:
    """Edition 1 of "daily" (Asia/Tokyo) going out with the sample feed's four stories: its top story and another."""
    with transaction(site.Session) as session:
        daily = lists.get_newsletter(session, "daily")
        daily.timezone, daily.articles_since = "Asia/Tokyo", datetime(2000, 1, 1, tzinfo=UTC)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        cut = sending.cut(session, daily, site.settings, now=datetime(2026, 5, 5, 9, 0, tzinfo=UTC)).edition
        items = session.scalars(select(EditionArticle).where(EditionArticle.edition_id == cut.id)
                                .order_by(EditionArticle.position)).all()
        top, other = items[0].article, items[1].article
        return dict(id=cut.id, subject=cut.subject, top=top.id, title=top.title, lead=top.lead, url=top.url,
                    other=other.title)


def withdraw(site, article_id: int) -> None:
    retraction.withdraw(site.Session, site.settings, site.social_client, article_id, "ada", clock=lambda: WHEN)


def test_the_web_view_shows_a_notice_where_the_withdrawn_story_was(client, site, edition):
    assert edition["title"] in client.get("/n/daily/1").text

    withdraw(site, edition["top"])
    page = client.get("/n/daily/1")

    assert page.status_code == 200
    assert "This story was withdrawn by the editors on May 6, 2026." in page.text  # in the newsletter's zone
    for trace in (edition["title"], edition["lead"][:40], edition["url"]):
        assert trace not in page.text
    assert edition["other"] in page.text  # the rest as it was mailed
    assert "syndicate.invalid" not in page.text and "/u/" not in page.text  # still nobody's own links
    assert "; sandbox " in page.headers["content-security-policy"]


def test_the_archive_and_the_feed_no_longer_name_the_withdrawn_story(client, site, edition):
    assert edition["subject"].startswith(edition["title"])  # the default subject: the top story's headline

    withdraw(site, edition["top"])
    listing = client.get("/n/daily").text
    feed = ET.fromstring(client.get("/n/daily/feed.atom").content)

    [entry] = feed.findall(f"{ATOM}entry")
    for text in (listing, entry.findtext(f"{ATOM}title"), entry.findtext(f"{ATOM}content")):
        assert edition["title"] not in text
    assert entry.findtext(f"{ATOM}title").startswith(edition["other"])  # the next story heads it now
    assert edition["other"] in listing
    assert "This story was withdrawn by the editors on May 6, 2026." in entry.findtext(f"{ATOM}content")
    assert entry.findtext(f"{ATOM}updated") == feed.findtext(f"{ATOM}updated") == WHEN.isoformat()
    with transaction(site.Session) as session:
        mailed = session.get(Edition, edition["id"])
        assert edition["title"] in mailed.html and mailed.subject == edition["subject"]  # the mail stays as sent


def test_an_editors_own_subject_that_named_the_story_gives_way_to_the_editions_name(client, site, edition):
    with transaction(site.Session) as session:
        mailed = session.get(Edition, edition["id"])
        mailed.custom_subject = mailed.subject = f"Tonight: {edition['title']}"

    withdraw(site, edition["top"])

    assert "<title>Daily #1</title>" in client.get("/n/daily/1").text
    assert ">Daily #1</a>" in client.get("/n/daily").text


def test_a_headline_edited_before_it_was_withdrawn_leaves_no_trace_of_the_mailed_subject(client, site, edition):
    """The site changed the headline, then the story was withdrawn: the mailed subject still names it in the old
    words, so the archive must not tell by the words whether it does."""
    with transaction(site.Session) as session:
        session.get(Article, edition["top"]).title = "Drills: a corrected headline"

    withdraw(site, edition["top"])
    feed = ET.fromstring(client.get("/n/daily/feed.atom").content)

    for text in (client.get("/n/daily").text, client.get("/n/daily/1").text, feed.findtext(f"{ATOM}entry/{ATOM}title")):
        assert edition["title"] not in text and "corrected headline" not in text


def test_an_edition_with_nothing_withdrawn_is_served_as_it_was_mailed(client, site, edition):
    """Not rendered again: the stored HTML, even if the template changed since (here, a line only it has)."""
    with transaction(site.Session) as session:
        other = session.scalar(select(Article).where(Article.title == edition["other"]))
        other.withdrawn_at, other.withdrawn_by = WHEN, "ada"  # withdrawn, but in no edition that went out
        session.delete(session.scalar(select(EditionArticle).where(EditionArticle.article_id == other.id)))
        mailed = session.get(Edition, edition["id"])
        mailed.html = mailed.html.replace("</body>", "<p>as it was mailed</p></body>")
    with transaction(site.Session) as session:
        stored = rendering.public_html(session.get(Edition, edition["id"]), site.settings)

    page = client.get("/n/daily/1").text
    assert page == stored and "<p>as it was mailed</p>" in page
