"""Clicks counted per story of an edition, never per reader: the links rendered once for every copy, the
redirect that counts (GET only, once per client and link in a while) and goes only to the stored story, and
no trace of who clicked anywhere in the database."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from conftest import CLICK_STORIES, clicks_newsroom, counted_links
from syndicate.db import transaction
from syndicate.delivery.copies import MessageFactory
from syndicate.http import api_tokens
from syndicate.models import Edition, EditionLink, Subscriber
from syndicate.newsletters import clicks
from syndicate.web.app import create_app

STORIES = CLICK_STORIES
COUNTED = re.compile(r"http://testserver/r/(\d+)/(\d+)\.([A-Za-z0-9_-]{16})")
READER_IP, READER_AGENT, READER_COOKIE = "203.0.113.77", "Zebra/9.9 (reader-agent-7731)", "seen=cookie-value-4410"


@pytest.fixture
def web(svc):
    with TestClient(create_app(), client=(READER_IP, 40000), follow_redirects=False) as client:
        yield client


def clicks_of(svc, edition_id: int) -> dict[int, int]:
    with transaction(svc.Session) as session:
        return dict(session.execute(sa.select(EditionLink.number, EditionLink.clicks)
                                    .where(EditionLink.edition_id == edition_id)).all())


def test_story_links_are_counting_links_the_same_in_every_readers_copy(svc):
    edition_id = clicks_newsroom(svc)
    with transaction(svc.Session) as session:
        edition = session.get(Edition, edition_id)
        assert not any(url in edition.html or url in edition.text for url in STORIES)
        assert {m.group(2) for m in COUNTED.finditer(edition.html)} == {"1", "2"}
        assert {m.group(2) for m in COUNTED.finditer(edition.text)} == {"1", "2"}
        factory = MessageFactory(svc.settings, edition.newsletter, edition)
        readers = session.scalars(sa.select(Subscriber).order_by(Subscriber.id)).all()
        copies = [factory(n + 1, r.id, r.email, None).data.decode() for n, r in enumerate(readers)]
    # quoted-printable folds lines: undo it, then every copy holds exactly the same counting links.
    found = [sorted(set(COUNTED.findall(re.sub(r"=\r\n", "", c).replace("=3D", "=")))) for c in copies]
    assert found[0] == found[1] and len(found[0]) == 2


def test_a_newsletter_that_doesnt_count_links_straight_to_the_stories(svc):
    edition_id = clicks_newsroom(svc, count_clicks=False)
    with transaction(svc.Session) as session:
        edition = session.get(Edition, edition_id)
        assert "/r/" not in edition.html and STORIES[1] in edition.html
        assert session.scalar(sa.select(sa.func.count()).select_from(EditionLink)) == 0


def test_a_click_counts_once_and_goes_to_the_story(svc, web):
    edition_id = clicks_newsroom(svc)
    first, second = counted_links(svc, edition_id)[:2]
    answer = web.get(first)
    assert answer.status_code == 302 and answer.headers["location"] == STORIES[0]
    assert answer.headers["cache-control"] == "no-store"
    web.get(first)  # the same reader again, at once: still one
    web.get(second)
    assert clicks_of(svc, edition_id) == {1: 1, 2: 1}
    with TestClient(create_app(), client=("198.51.100.9", 40001), follow_redirects=False) as other:
        other.get(first)
    assert clicks_of(svc, edition_id)[1] == 2


def test_head_answers_but_counts_nothing(svc, web):
    edition_id = clicks_newsroom(svc)
    answer = web.head(counted_links(svc, edition_id)[0])
    assert answer.status_code == 302 and answer.headers["location"] == STORIES[0]
    assert clicks_of(svc, edition_id) == {1: 0, 2: 0}


@pytest.mark.parametrize("forge", [
    lambda e, n, mark: f"/r/{e}/{n}.{'A' * 16}",  # a made-up mark
    lambda e, n, mark: f"/r/{e}/{3 - int(n)}.{mark}",  # another link's mark
    lambda e, n, mark: f"/r/{int(e) + 1}/{n}.{mark}",  # another edition's
    lambda e, n, mark: f"/r/{e}/{n}.{mark[:-1]}",  # cut short
    lambda e, n, mark: f"/r/{e}/{n}",  # no mark
    lambda e, n, mark: f"/r/{e}/{n}.{mark}?url=https://evil.example/",  # asking for another target
    lambda e, n, mark: f"/r/99999999999/{n}.{mark}",  # beyond any id
])
def test_a_forged_link_finds_nothing_and_counts_nothing(svc, web, forge):
    edition_id = clicks_newsroom(svc)
    e, n, mark = COUNTED.match("http://testserver" + counted_links(svc, edition_id)[0]).groups()
    answer = web.get(forge(e, n, mark))
    if answer.status_code == 302:  # only the query was forged: the stored story, never the asked-for address
        assert answer.headers["location"] == STORIES[0]
    else:
        assert answer.status_code == 404
        assert "one of ours" in answer.text
    assert clicks_of(svc, edition_id)[2] == 0


def test_a_link_of_ours_with_no_row_is_not_found(svc, web):
    edition_id = clicks_newsroom(svc)
    mark = clicks.link_url(svc.settings, edition_id, 7).rpartition("/")[2]
    assert web.get(f"/r/{edition_id}/{mark}").status_code == 404


def test_clicks_before_the_edition_goes_out_are_an_editors_and_not_counted(svc, web):
    edition_id = clicks_newsroom(svc, start=False)
    answer = web.get(counted_links(svc, edition_id)[0])
    assert answer.status_code == 302
    assert clicks_of(svc, edition_id) == {1: 0, 2: 0}


def test_no_reader_identity_is_stored_anywhere(svc, web):
    edition_id = clicks_newsroom(svc)
    for link in counted_links(svc, edition_id):
        web.get(link, headers={
            "User-Agent": READER_AGENT, "Cookie": READER_COOKIE, "X-Forwarded-For": READER_IP,
            "Referer": "https://mail.example/inbox/reader-7731"})
    assert clicks_of(svc, edition_id) == {1: 1, 2: 1}
    with svc.engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("edition_links")}
        assert columns == {"id", "edition_id", "number", "article_id", "url", "clicks"}
        everything = []
        for table in sa.inspect(connection).get_table_names():
            for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')):
                everything += [str(value) for value in row]
    dump = "\n".join(everything)
    for trace in (READER_IP, "reader-agent-7731", "cookie-value-4410", "reader-7731", "testclient"):
        assert trace not in dump


def test_recent_clicks_forget_after_the_window_and_stay_bounded():
    recent = clicks.RecentClicks(window=60, limit=100)
    assert recent.first("a", 1, 1, now=0) and not recent.first("a", 1, 1, now=59)
    assert recent.first("a", 1, 1, now=61)
    for n in range(500):
        recent.first(f"client-{n}", 1, 1, now=100 + n / 1000)
    assert len(recent._seen) <= 100


def test_the_results_api_needs_a_stats_token_and_gives_clicks_per_story(svc, web):
    edition_id = clicks_newsroom(svc)
    web.get(counted_links(svc, edition_id)[1])
    with transaction(svc.Session) as session:
        _, reader = api_tokens.create_token(session, "dashboard", scopes=["stats:read"])
        _, pusher = api_tokens.create_token(session, "cms", scopes=["articles:push"])
    path = f"/api/editions/{edition_id}/results"
    assert web.get(path).status_code == 401
    refused = web.get(path, headers={"Authorization": f"Bearer {pusher}"})
    assert refused.status_code == 403 and refused.json()["scope"] == "stats:read"
    did = web.get(path, headers={"Authorization": f"Bearer {reader}"}).json()
    assert did["counts_clicks"] is True and did["clicks"] == 1
    assert [(link["number"], link["url"], link["clicks"]) for link in did["links"]] == [
        (1, STORIES[0], 0), (2, STORIES[1], 1)]
    assert set(did["rates"]) == {"unsubscribed", "bounced", "complained"}
    missing = web.get(f"/api/editions/{edition_id + 100}/results", headers={"Authorization": f"Bearer {reader}"})
    assert missing.status_code == 404 and "edition list" in missing.json()["error"]
