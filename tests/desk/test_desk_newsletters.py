"""Newsletters and the calendar on the desk, at the HTTP level: the pages (settings, the schedule in words
and its next sends in the editor's zone, pause, resume, prepare; refusals that keep what was typed) and the
same through the JSON API with an editor's token."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from desk_client import add_editor, api_headers, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.ingest import feeds
from syndicate.models import Article, Edition, Newsletter, utcnow
from syndicate.newsletters import lists


@pytest.fixture
def client(svc):
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, max_age_hours=0,
                             slug="morning", name="The Morning Briefing", from_address="news@example.com",
                             cron="0 7 * * *", timezone="Europe/Berlin")
    add_editor(svc, timezone="America/New_York")
    return desk_client()


@pytest.fixture
def token(client, svc) -> dict:
    return api_headers(svc)


def newsletter(svc, slug: str = "morning") -> Newsletter:
    with transaction(svc.Session) as session:
        found = lists.get_newsletter(session, slug)
        session.expunge(found)
        return found


def add_story(svc) -> None:
    now = utcnow()
    with transaction(svc.Session) as session:
        session.add(Article(identity="s", url="https://news.example.com/s/", title="Council approves the library",
                            lead="", content_hash="s" * 64, categories=[], published_at=now, first_seen_at=now))


def settings_form(**changes) -> dict:
    form = dict(name="The Morning Briefing", from_name="The Morning Briefing", from_address="news@example.com",
                reply_to="", subject_template="{{ top.title }}", template="edition", cron="0 7 * * *",
                timezone="Europe/Berlin", max_items="20", categories_include="", categories_exclude="",
                breaking_categories="")
    return form | changes


def test_the_newsletter_pages_need_a_signed_in_editor(client):
    for path in ("/desk/newsletters", "/desk/newsletters/morning"):
        assert client.get(path).headers["location"] == f"/desk/login?next={path}"
    assert client.get("/api/v1/newsletters").status_code == 401
    assert client.get("/api/v1/calendar").status_code == 401


def test_the_list_shows_each_newsletter_with_its_schedule_in_words_and_audience(client):
    sign_in(client)
    page = client.get("/desk/newsletters").text
    assert "The Morning Briefing" in page and "At 07:00 every day, Europe/Berlin time" in page
    assert "0 confirmed" in page and 'href="/desk/newsletters/morning"' in page
    # The next send in the editor's zone: 07:00 in Berlin is 01:00 or 02:00 in New York.
    assert re.search(r"<time [^>]+>\w{3} \d\d \w{3} 0[12]:00 E[DS]T</time>", page)


def test_a_newsletter_page_shows_the_next_five_sends_in_the_editors_zone_and_its_own(client):
    sign_in(client)
    page = client.get("/desk/newsletters/morning").text
    assert "At 07:00 every day, Europe/Berlin time" in page
    sends = re.search(r'<ol id="next-sends">(.*?)</ol>', page, re.S).group(1)
    assert len(re.findall(r"<li>", sends)) == 5
    assert len(re.findall(r"0[12]:00 E[DS]T</time>", sends)) == 5  # the editor's zone
    assert len(re.findall(r"07:00 CES?T in Europe/Berlin", sends)) == 5  # and the newsletter's own


def test_an_editor_creates_a_newsletter_and_a_form_without_the_token_changes_nothing(client, svc):
    token = sign_in(client)
    fields = dict(slug="evening", name="The Evening Wrap", from_address="evening@example.com", cron="0 18 * * 1-5",
                  timezone="Europe/Berlin", first_fill="none")
    assert client.post("/desk/newsletters", data=fields).status_code == 403
    with transaction(svc.Session) as session:
        assert session.query(Newsletter).filter_by(slug="evening").count() == 0
    made = client.post("/desk/newsletters", data=fields | {"csrf": token})
    assert made.status_code == 303 and made.headers["location"] == "/desk/newsletters/evening"
    assert "At 18:00 on Monday through Friday, Europe/Berlin time" in client.get("/desk/newsletters/evening").text
    again = client.post("/desk/newsletters", data=fields | {"csrf": token, "name": "Another"})
    assert again.status_code == 400 and "already exists" in again.text and 'value="Another"' in again.text


def test_a_bad_cron_is_refused_keeping_what_was_typed_and_saying_what_to_do(client, svc):
    token = sign_in(client)
    before = newsletter(svc)
    refused = client.post("/desk/newsletters/morning", data=settings_form(
        csrf=token, cron="0 25 * * *", name="The Early Briefing", categories_include="Local, Politics"))
    assert refused.status_code == 400
    error = re.search(r'<p class="error" role="alert" id="form-error">(.*?)</p>', refused.text, re.S).group(1)
    assert "bad cron expression &#39;0 25 * * *&#39;" in error and "e.g. &#39;0 7 * * *&#39; for 07:00 daily" in error
    assert 'value="0 25 * * *"' in refused.text and 'value="The Early Briefing"' in refused.text
    assert 'value="Local, Politics"' in refused.text
    after = newsletter(svc)
    assert (after.name, after.cron, after.categories_include) == (before.name, "0 7 * * *", None)

    many = client.post("/desk/newsletters/morning", data=settings_form(csrf=token, max_items="many"))
    assert many.status_code == 400 and "not a number" in many.text and 'value="many"' in many.text
    blank = client.post("/desk/newsletters/morning", data=settings_form(csrf=token, from_address=" "))
    assert blank.status_code == 400 and "The From: address can&#39;t be left blank" in blank.text


def test_saving_the_settings_changes_what_was_changed_and_only_that(client, svc, sample_feed):
    with transaction(svc.Session) as session:
        feed_id = feeds.add_feed(session, "https://truthusa.example/feed/").id
    token = sign_in(client)
    before = newsletter(svc)
    untouched = client.post("/desk/newsletters/morning", data=settings_form(csrf=token))
    assert untouched.headers["location"] == "/desk/newsletters/morning?saved=1"
    assert newsletter(svc).next_run_at == before.next_run_at

    saved = client.post("/desk/newsletters/morning", data=settings_form(
        csrf=token, reply_to="desk@example.com", categories_include="Local, Politics", breaking_categories="Alert",
        max_items="8", feed_ids=[str(feed_id)], cron="30 6 * * 1-5", timezone="Europe/London"))
    assert saved.status_code == 303
    after = newsletter(svc)
    assert (after.reply_to, after.categories_include, after.breaking_categories, after.max_items, after.feed_ids) == (
        "desk@example.com", ["Local", "Politics"], ["Alert"], 8, [feed_id])
    assert (after.cron, after.timezone) == ("30 6 * * 1-5", "Europe/London")
    page = client.get("/desk/newsletters/morning?saved=1").text
    assert "Saved." in page and "At 06:30 on Monday through Friday, Europe/London time" in page
    assert f'value="{feed_id}" checked' in page

    cleared = client.post("/desk/newsletters/morning", data=settings_form(csrf=token, cron="", reply_to=""))
    assert cleared.status_code == 303
    after = newsletter(svc)
    assert (after.cron, after.next_run_at, after.reply_to, after.feed_ids) == (None, None, None, None)
    assert "No regular editions" in client.get("/desk/newsletters/morning").text


def test_pause_resume_and_prepare_the_next_edition_from_the_page(client, svc):
    token = sign_in(client)
    assert client.post("/desk/newsletters/morning/pause", data={"csrf": token}).status_code == 303
    assert (newsletter(svc).status, newsletter(svc).next_run_at) == ("paused", None)
    assert "If resumed now, it would send at" in client.get("/desk/newsletters/morning").text
    client.post("/desk/newsletters/morning/resume", data={"csrf": token})
    resumed = newsletter(svc)
    assert resumed.status == "active" and resumed.next_run_at is not None

    nothing = client.post("/desk/newsletters/morning/prepare", data={"csrf": token})
    assert nothing.status_code == 200 and "Nothing to prepare: no new articles since the last edition" in nothing.text
    add_story(svc)
    prepared = client.post("/desk/newsletters/morning/prepare", data={"csrf": token})
    with transaction(svc.Session) as session:
        edition = session.query(Edition).filter_by(status="scheduled").one()
        assert edition.scheduled_for == resumed.next_run_at and edition.subject == "Council approves the library"
    assert prepared.headers["location"] == f"/desk/editions/{edition.id}"
    recent = re.search(r'<table id="recent-editions">(.*?)</table>', client.get("/desk/newsletters/morning").text,
                       re.S).group(1)
    assert f'href="/desk/editions/{edition.id}">#2' in recent and "skipped" in recent

    assert client.post("/desk/newsletters/morning/explode", data={"csrf": token}).status_code == 400


def test_the_schedule_preview_answers_as_the_editor_types(client):
    sign_in(client)
    good = client.get("/desk/schedule", params={"cron": "0 9 * * 1", "timezone": "Asia/Tokyo"}).json()
    assert good["ok"] and good["schedule"] == "At 09:00 on Monday, Asia/Tokyo time" and len(good["next_sends"]) == 5
    bad = client.get("/desk/schedule", params={"cron": "0 7 * *", "timezone": "UTC"}).json()
    assert not bad["ok"] and "bad cron expression" in bad["problem"]
    zone = client.get("/desk/schedule", params={"cron": "0 7 * * *", "timezone": "Mars/Olympus"}).json()
    assert "use an IANA name like Europe/Berlin" in zone["problem"]


def test_the_today_page_shows_the_next_seven_days_with_editions_to_come(client, svc):
    sign_in(client)
    page = client.get("/desk").text
    calendar = re.search(r'<section id="calendar">(.*?)</section>', page, re.S).group(1)
    assert "Next 7 days" in calendar and "times in America/New_York" in calendar
    assert len(re.findall(r'<div class="day"', calendar)) == 7
    assert calendar.count("projected edition") >= 6 and "Pause newsletter" in calendar
    assert "The Morning Briefing" in calendar
    assert client.get("/desk?days=40").status_code == 400


# ── the JSON API ─────────────────────────────────────────────────────────────


def test_the_api_lists_shows_creates_and_changes_newsletters(client, token, svc):
    [listed] = client.get("/api/v1/newsletters", headers=token).json()
    assert listed["slug"] == "morning" and listed["schedule"] == "At 07:00 every day, Europe/Berlin time"
    shown = client.get("/api/v1/newsletters/morning", headers=token).json()
    assert len(shown["next_sends"]) == 5 and shown["subscribers"] == 0 and shown["recent_editions"] == []

    made = client.post("/api/v1/newsletters", headers=token, json=dict(
        slug="alerts", name="Alerts", from_address="alerts@example.com", cron=None, breaking_categories=["Alert"]))
    assert made.status_code == 201
    assert (made.json()["schedule"], made.json()["breaking_categories"]) == (
        "No regular editions: only one-off and breaking ones", ["Alert"])

    refused = client.patch("/api/v1/newsletters/morning", headers=token, json={"cron": "0 25 * * *"})
    assert refused.status_code == 422 and "e.g. '0 7 * * *'" in refused.json()["error"]
    assert client.patch("/api/v1/newsletters/morning", headers=token, json={"name": None}).status_code == 422
    changed = client.patch("/api/v1/newsletters/morning", headers=token,
                           json={"cron": "0 6 * * *", "categories_exclude": ["Sport"]}).json()
    assert changed["schedule"] == "At 06:00 every day, Europe/Berlin time"
    assert changed["categories_exclude"] == ["Sport"] and changed["name"] == "The Morning Briefing"
    assert client.get("/api/v1/newsletters/nope", headers=token).status_code == 404


def test_the_api_pauses_resumes_and_prepares(client, token, svc):
    assert client.post("/api/v1/newsletters/morning/pause", headers=token).json()["status"] == "paused"
    add_story(svc)
    # Paused, it has no next run: what is prepared is a draft to schedule by hand, as `edition cut --draft`.
    draft = client.post("/api/v1/newsletters/morning/prepare", headers=token).json()
    assert (draft["status"], draft["kind"], draft["scheduled_for"]) == ("draft", "one-off", None)
    assert client.post("/api/v1/newsletters/morning/resume", headers=token).json()["status"] == "active"
    empty = client.post("/api/v1/newsletters/morning/prepare", headers=token).json()  # the story is the draft's
    assert empty["status"] == "skipped" and empty["note"] == "no new articles since the last edition"
    assert client.post("/api/v1/newsletters/morning/stop", headers=token).status_code == 422


def test_the_api_calendar_lists_the_days_ahead_in_the_editors_zone(client, token, svc):
    add_story(svc)
    prepared = client.post("/api/v1/newsletters/morning/prepare", headers=token).json()
    answer = client.get("/api/v1/calendar", headers=token, params={"days": 3}).json()
    assert answer["zone"] == "America/New_York"
    entries = answer["entries"]
    assert prepared["status"] == "scheduled" and prepared["link"] == f"/desk/editions/{prepared['id']}"
    assert entries[0]["id"] == prepared["id"] and not entries[0]["projected"]  # the slot it took
    assert entries[0]["when"] == prepared["scheduled_for"]
    assert all(e["projected"] and e["status"] == "scheduled" for e in entries[1:])
    assert {e["kind"] for e in entries} == {"edition"} and 2 <= len(entries) <= 3
    assert client.get("/api/v1/calendar", headers=token, params={"days": 0}).status_code == 422
    schedule = client.get("/api/v1/schedule", headers=token, params={"cron": "0 7 * * *"}).json()
    assert schedule["schedule"] == "At 07:00 every day, UTC time" and len(schedule["next_sends"]) == 5


def test_the_api_is_documented_under_its_tags(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/api/v1/calendar"]["get"]["tags"] == ["calendar"]
    for path, method in [("/api/v1/newsletters", "get"), ("/api/v1/newsletters", "post"),
                         ("/api/v1/newsletters/{slug}", "patch"), ("/api/v1/newsletters/{slug}/prepare", "post"),
                         ("/api/v1/newsletters/{slug}/{action}", "post")]:
        assert paths[path][method]["tags"] == ["newsletters"]
    assert not any(p.startswith("/desk") for p in paths)


def test_a_sent_edition_is_on_the_calendar_of_its_day_only(client, svc, token):
    now = utcnow()
    with transaction(svc.Session) as session:
        found = lists.get_newsletter(session, "morning")
        session.add(Edition(newsletter_id=found.id, number=7, status="sent", subject="Sent just now",
                            scheduled_for=now))
        session.add(Edition(newsletter_id=found.id, number=6, status="sent", subject="Sent last week",
                            scheduled_for=now - timedelta(days=7)))
    entries = client.get("/api/v1/calendar", headers=token, params={"days": 1}).json()["entries"]
    assert [(e["title"], e["status"]) for e in entries if not e["projected"]] == [("Sent just now", "sent")]
