"""The desk and local-time delivery: the newsletter's "at each reader's local time" box (form and API), and an
edition's waves on its page, in its API answer and in `syndicate edition show`: done, and the next to come."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import time_machine
from sqlalchemy import select
from starlette.testclient import TestClient

from conftest import cli_in, configured
from desk_client import add_editor, api_headers, desk_client
from desk_client import signed_in as sign_in
from syndicate import tasks
from syndicate.db import transaction
from syndicate.models import Article, Edition
from syndicate.newsletters import lists
from syndicate.subscribers import consent
from syndicate.web.app import create_app

ZONES = {"ny": "America/New_York", "berlin": "Europe/Berlin", "sydney": "Australia/Sydney", "unzoned": None}
FORM = dict(name="Morning", from_name="Morning", from_address="news@example.com", reply_to="",
            subject_template="{{ top.title }}", template="edition", cron="0 7 * * *", timezone="Europe/Berlin",
            max_items="20", categories_include="", categories_exclude="", breaking_categories="")


@pytest.fixture
def svc(make_settings, tmp_path, smtp_server):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'desk.db'}", smtp_url=smtp_server.url),
                     eager=True)
    add_editor(svc)
    return svc


def newsroom(svc, local_time: bool = True) -> None:
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug="morning", name="Morning", from_address="news@example.com",
                                    cron="0 7 * * *", timezone="Europe/Berlin", max_age_hours=0, now=start,
                                    local_time=local_time)
        for name, zone in ZONES.items():
            consent.subscribe(session, f"{name}@example.com", [made.id], confirmed=True, now=start, timezone=zone)
        session.add(Article(identity="t|1", url="https://news.example/1", title="The <b>story</b>", lead="Lead.",
                            content_hash="x", categories=[], published_at=start, first_seen_at=start))


def test_an_editor_ticks_local_time_in_the_newsletters_settings(svc):
    newsroom(svc, local_time=False)
    client = desk_client()
    token = sign_in(client)
    assert re.search(r'name="local_time" id="local-time" value="true">', client.get("/desk/newsletters/morning").text)
    assert client.post("/desk/newsletters/morning", data=FORM | dict(csrf=token, local_time="true")).status_code == 303
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").local_time is True
    assert 'name="local_time" id="local-time" value="true" checked' in client.get("/desk/newsletters/morning").text
    client.post("/desk/newsletters/morning", data=FORM | dict(csrf=token))  # unticked: absent from the form
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").local_time is False
    # Without a schedule there is no wall-clock time to keep: refused, with what to do, nothing saved.
    page = client.post("/desk/newsletters/morning", data=FORM | dict(csrf=token, cron="", local_time="true"))
    assert page.status_code == 400 and "has no schedule: give a cron too" in page.text
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").cron == "0 7 * * *"


def test_the_api_sets_and_shows_local_time(svc):
    newsroom(svc, local_time=False)
    api = TestClient(create_app(), base_url="http://testserver", headers=api_headers(svc))
    changed = api.patch("/api/v1/newsletters/morning", json={"local_time": True})
    assert changed.status_code == 200, changed.text
    assert api.get("/api/v1/newsletters/morning").json()["local_time"] is True
    assert api.patch("/api/v1/newsletters/morning", json={"local_time": "sometimes"}).status_code == 422


def test_the_edition_page_api_and_cli_show_the_waves_done_and_the_next(svc, tmp_path):
    newsroom(svc)
    with time_machine.travel(datetime(2026, 6, 1, 21, tzinfo=UTC), tick=False):  # 07:00 on 2 June in Sydney
        tasks.tick()
    with transaction(svc.Session) as session:
        edition_id = session.scalar(select(Edition.id))
    client = desk_client()
    sign_in(client)
    page = client.get(f"/desk/editions/{edition_id}").text
    said = re.search(r'<p id="waves-said">(.*?)</p>', page).group(1)
    assert said.startswith("1 of 3 waves done; waiting: 3 — next wave ") and "(Europe/Berlin)" in said
    assert re.findall(r'data-done="(\w+)"', page) == ["yes", "no", "no"]
    assert 'data-count="waiting">3<' in page

    answer = TestClient(create_app(), base_url="http://testserver", headers=api_headers(svc)) \
        .get(f"/api/v1/editions/{edition_id}").json()
    assert answer["waves"]["next_at"] == "2026-06-02T05:00:00Z" and answer["waves"]["waiting"] == 3
    assert [w["zones"] for w in answer["waves"]["waves"]] == [["Australia/Sydney"], ["Europe/Berlin"],
                                                              ["America/New_York"]]

    run = cli_in({"SYNDICATE_DATA_DIR": str(svc.settings.data_dir), "SYNDICATE_SECRET_KEY": "test-secret",
                  "SYNDICATE_DATABASE_URL": svc.settings.database_url})
    shown = run("edition", "show", "morning/1")
    assert "waves:        1 of 3 waves done; waiting: 3 — next wave 2026-06-02 05:00 UTC, 07:00 Europe/Berlin" \
        in shown
