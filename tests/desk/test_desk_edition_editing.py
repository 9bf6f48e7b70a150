"""The desk shapes what goes out: any story found and added to an edition, an intro, blurbs and a sponsor
block (rendered safe, the preview following), a one-off draft next to the regular schedule, a prepared
regular edition rescheduled without a second mail, and a story sent as breaking news now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select
from starlette.testclient import TestClient

from conftest import configured
from desk_client import add_editor, api_headers, csrf, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.models import Article, Edition, Newsletter, utcnow
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent
from syndicate.web.app import create_app


@pytest.fixture
def svc(make_settings, tmp_path, smtp_server):
    """The desk's services with a real SMTP server behind them; tasks run inline."""
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'desk.db'}", smtp_url=smtp_server.url),
                     eager=True)
    svc.smtp = smtp_server
    add_editor(svc)
    return svc


@pytest.fixture
def client(svc):
    return desk_client()


@pytest.fixture
def api(svc):
    return TestClient(create_app(), base_url="http://testserver", headers=api_headers(svc))


def newsroom(svc, cron: str | None = None, now: datetime | None = None, **options) -> list[int]:
    """"morning", taking only Local stories, read by two; a Local story, a World one and a withdrawn one."""
    now = now or utcnow()
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                    from_address="news@example.com", cron=cron, timezone="UTC",
                                    categories_include=["Local"], now=now - timedelta(hours=1), **options)
        for reader in ("a@example.com", "b@example.com"):
            consent.subscribe(session, reader, [made.id], confirmed=True)
        ids = []
        for i, (title, category) in enumerate((("Council meets", "Local"), ("Storm over the Atlantic", "World"),
                                               ("A retracted claim", "Local"))):
            article = Article(identity=f"s{i}", url=f"https://news.example/{i}", title=title, lead=f"Lead {i}.",
                              content_hash=str(i), categories=[category], published_at=now - timedelta(minutes=i),
                              first_seen_at=now, withdrawn_at=now if i == 2 else None)
            session.add(article)
            session.flush()
            ids.append(article.id)
        return ids


def draft(svc) -> int:
    with transaction(svc.Session) as session:
        newsletter = session.scalar(select(Newsletter))
        return editions.create_edition(session, newsletter, svc.settings, kind="one-off").id


def items(svc, edition_id: int) -> list[tuple[int, str | None]]:
    with transaction(svc.Session) as session:
        return [(i.article_id, i.blurb) for i in session.get(Edition, edition_id).items]


def test_an_editor_finds_and_adds_any_story_and_writes_an_intro_blurbs_and_a_sponsor(client, svc):
    local, world, withdrawn = newsroom(svc)
    edition_id = draft(svc)
    sign_in(client)
    page = client.get(f"/desk/editions/{edition_id}", params={"q": "storm"}).text
    assert "Storm over the Atlantic" in page and f'name="add" value="{world}"' in page
    withdrawn_found = client.get(f"/desk/editions/{edition_id}", params={"q": "retracted"}).text
    assert "withdrawn" in withdrawn_found and f'value="{withdrawn}"' not in withdrawn_found
    token = csrf(client, f"/desk/editions/{edition_id}")

    added = client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "add": world})
    assert added.status_code == 303 and items(svc, edition_id) == [(local, None), (world, None)]
    assert "in #1" in client.get(f"/desk/editions/{edition_id}", params={"q": "storm"}).text

    saved = client.post(f"/desk/editions/{edition_id}/edit", data={
        "csrf": token, "subject": "", "intro": "Good *morning* <script>alert(1)</script>",
        "blurb_of": [local, world], "blurb": ["", "Far, but [it matters](https://news.example/why)."],
        "sponsor_text": "Bristol Bikes", "sponsor_url": "https://bikes.example/"})
    assert saved.status_code == 303 and items(svc, edition_id) == [
        (local, None), (world, "Far, but [it matters](https://news.example/why).")]
    preview = client.get(f"/desk/editions/{edition_id}/preview.html").text
    assert "Good <em>morning</em> &lt;script&gt;" in preview and "<script>alert" not in preview
    assert 'href="https://news.example/why"' in preview and "Sponsored" in preview
    text = client.get(f"/desk/editions/{edition_id}/preview.txt").text.replace("\r\n", "\n")
    assert "Far, but it matters <https://news.example/why>." in text and "SPONSORED\nBristol Bikes" in text
    page = client.get(f"/desk/editions/{edition_id}").text
    assert "Good *morning* &lt;script&gt;" in page and 'value="https://bikes.example/"' in page

    refused = client.post(f"/desk/editions/{edition_id}/edit", data={
        "csrf": token, "sponsor_text": "Bristol Bikes", "sponsor_url": "javascript:alert(1)"})
    assert refused.status_code == 400 and "is not a web address" in refused.text
    refused = client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "add": withdrawn})
    assert refused.status_code == 400 and "was withdrawn" in refused.text
    refused = client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "blurb_of": [local]})
    assert refused.status_code == 400 and "reload the page" in refused.text

    # The form emptied takes the words away again; the subject goes back to the template's.
    client.post(f"/desk/editions/{edition_id}/edit", data={
        "csrf": token, "intro": "", "blurb_of": [local, world], "blurb": ["", ""], "sponsor_text": "",
        "sponsor_url": ""})
    assert items(svc, edition_id) == [(local, None), (world, None)]
    preview = client.get(f"/desk/editions/{edition_id}/preview.html").text
    assert "<em>morning</em>" not in preview and "Sponsored" not in preview and "it matters" not in preview


def test_the_api_adds_stories_and_words_in_one_change_rendered_once(api, svc):
    local, world, _ = newsroom(svc)
    edition_id = draft(svc)
    answer = api.patch(f"/api/v1/editions/{edition_id}", json={
        "add": [world], "order": [world], "intro": "Two picks.", "blurbs": {str(world): "Read *this* first."},
        "sponsor_text": "Bristol Bikes", "sponsor_url": "https://bikes.example/"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [s["id"] for s in body["stories"]] == [world, local] and body["stories"][0]["blurb"] == "Read *this* first."
    assert (body["intro"], body["sponsor_url"]) == ("Two picks.", "https://bikes.example/")
    assert api.patch(f"/api/v1/editions/{edition_id}", json={"intro": "x" * 5001}).status_code == 422
    assert api.patch(f"/api/v1/editions/{edition_id}", json={"blurbs": {"999": "x"}}).status_code == 422


def test_a_one_off_draft_from_the_desk_leaves_the_regular_schedule_alone(client, svc, api):
    newsroom(svc, cron="0 7 * * *")
    sign_in(client)
    page = client.get("/desk/newsletters/morning").text
    assert "Make a one-off draft" in page and "Prepare the next edition now" in page
    made = client.post("/desk/newsletters/morning/draft", data={"csrf": csrf(client, "/desk/newsletters/morning")})
    assert made.status_code == 303
    with transaction(svc.Session) as session:
        edition = session.scalar(select(Edition))
        assert (edition.kind, edition.status, edition.slot) == ("one-off", "draft", None)
        assert made.headers["location"] == f"/desk/editions/{edition.id}"
        assert session.scalar(select(Newsletter)).next_run_at is not None
    # Nothing new left: said on the newsletter's page, no empty edition opened.
    again = client.post("/desk/newsletters/morning/draft", data={"csrf": csrf(client, "/desk/newsletters/morning")})
    assert again.status_code == 200 and "Nothing for a draft: no new articles" in again.text
    assert api.post("/api/v1/newsletters/morning/draft").json()["status"] == "skipped"


@pytest.mark.parametrize("to", ["06:15", "08:45"])
def test_a_prepared_edition_rescheduled_on_the_desk_is_the_one_mail_of_its_morning(client, svc, to):
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    with time_machine.travel(now, tick=False):
        newsroom(svc, cron="0 7 * * *", now=now, max_items=1)
        with transaction(svc.Session) as session:  # a second Local story: the run at 07:00 would mail it
            session.add(Article(identity="s9", url="https://news.example/9", title="Bins collected late",
                                lead="Lead.", content_hash="9", categories=["Local"], published_at=now,
                                first_seen_at=now))
        sign_in(client)
        token = csrf(client, "/desk/newsletters/morning")
        prepared = client.post("/desk/newsletters/morning/prepare", data={"csrf": token})
        edition_id = int(prepared.headers["location"].rsplit("/", 1)[1])
        moved = client.post(f"/desk/editions/{edition_id}/schedule",
                            data={"csrf": token, "at": f"2026-12-02T{to}"})
        assert moved.status_code == 303
        assert "regular edition" in client.get(f"/desk/editions/{edition_id}").text
    for at in ("06:00", "06:16", "07:00", "08:46", "09:00"):
        sending.run_due(svc.Session, svc.settings, datetime.fromisoformat(f"2026-12-02T{at}:30+00:00"))
    with transaction(svc.Session) as session:
        made = session.scalars(select(Edition).where(Edition.status != "skipped")).all()
        assert [(e.id, e.kind, e.status) for e in made] == [(edition_id, "regular", "sending")]


def test_a_story_goes_out_as_breaking_news_from_its_page_once(client, svc, api):
    local, world, withdrawn = newsroom(svc)
    sign_in(client)
    page = client.get(f"/desk/articles/{world}").text
    assert "Send as breaking now" in page and "data-confirm=" in page
    token = csrf(client, f"/desk/articles/{world}")
    sent = client.post(f"/desk/articles/{world}/breaking", data={"csrf": token, "newsletter": "morning"})
    assert sent.status_code == 200 and "Sent as breaking news" in sent.text
    assert sorted(r for m in svc.smtp.messages for r in m.recipients) == ["a@example.com", "b@example.com"]
    with transaction(svc.Session) as session:
        edition = session.scalar(select(Edition))
        assert (edition.kind, edition.started_at is not None, [i.article_id for i in edition.items]) == (
            "breaking", True, [world])

    again = client.post(f"/desk/articles/{world}/breaking", data={"csrf": token, "newsletter": "morning"})
    assert again.status_code == 400 and "already" in again.text and len(svc.smtp.messages) == 2
    nobody = client.post(f"/desk/articles/{local}/breaking", data={"csrf": token, "newsletter": ""})
    assert nobody.status_code == 400 and "choose the newsletter" in nobody.text
    assert client.post(f"/desk/articles/{local}/breaking", data={"newsletter": "morning"}).status_code == 403
    assert "Send as breaking now" not in client.get(f"/desk/articles/{withdrawn}").text

    answer = api.post(f"/api/v1/articles/{local}/breaking", json={"newsletter": "morning"})
    assert answer.status_code == 200 and answer.json()["status"] == "sending" and len(svc.smtp.messages) == 4
    assert api.post(f"/api/v1/articles/{withdrawn}/breaking", json={"newsletter": "morning"}).status_code == 422


def test_the_breaking_hint_says_the_rule(client, svc):
    newsroom(svc)
    sign_in(client)
    assert "even if not in the categories above; never if in one it never takes" in client.get(
        "/desk/newsletters/morning").text
