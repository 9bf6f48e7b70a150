"""Clicks and rates from the command line: a newsletter told to count clicks, and `edition show` saying how
many each story got and the edition's unsubscribe, bounce and complaint rates (a table, or data with --json)."""

from __future__ import annotations

import json
import re

import pytest
from starlette.testclient import TestClient

from conftest import clicks_newsroom, counted_links
from syndicate.db import transaction
from syndicate.models import Delivery, Edition, SubscriberEvent, utcnow
from syndicate.newsletters import lists
from syndicate.web.app import create_app


@pytest.fixture
def env(svc, tmp_path) -> dict[str, str]:
    """The command line on the test's own database and key."""
    return {"SYNDICATE_DATA_DIR": str(svc.settings.data_dir), "SYNDICATE_SECRET_KEY": "test-secret",
            "SYNDICATE_BASE_URL": "http://testserver", "SYNDICATE_DATABASE_URL": svc.settings.database_url}


def test_an_editor_turns_click_counting_on_and_off(svc, console):
    clicks_newsroom(svc, count_clicks=False, start=False)
    code, out, err = console("newsletter", "edit", "morning", "--count-clicks")
    assert code == 0, err
    assert re.search(r"count clicks: +yes", out)
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").count_clicks is True
    code, out, err = console("newsletter", "show", "morning", "--json")
    assert json.loads(out)["count_clicks"] is True
    assert console("newsletter", "edit", "morning", "--no-count-clicks")[0] == 0
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").count_clicks is False


def test_edition_show_says_clicks_per_story_and_the_rates(svc, console):
    edition_id = clicks_newsroom(svc)
    with transaction(svc.Session) as session:  # both got it; one of them bounced since
        rows = session.query(Delivery).filter_by(edition_id=edition_id).all()
        for row in rows:
            row.status, row.sent_at = "sent", utcnow()
        session.add(SubscriberEvent(subscriber_id=rows[0].subscriber_id, delivery_id=rows[0].id, kind="bounce",
                                    source="smtp"))
    first, second = counted_links(svc, edition_id)
    for n, host in enumerate(("203.0.113.1", "203.0.113.2", "203.0.113.3")):
        with TestClient(create_app(), client=(host, 40000), follow_redirects=False) as reader:
            reader.get(first)
            if n == 0:
                reader.get(second)

    code, out, err = console("edition", "show", "morning/1")
    assert code == 0, err
    assert "of 2 delivered: 0.0% unsubscribed (0), 50.0% bounced (1), 0.0% complained (0)" in out
    assert "clicks:       4 (200.0% of delivered)" in out
    assert "  1.      3  Story 0" in out and "  2.      1  Story 1" in out

    code, out, err = console("edition", "show", str(edition_id), "--json")
    did = json.loads(out)["results"]
    assert did["delivered"] == 2 and did["bounced"] == 1 and did["rates"]["bounced"] == 0.5
    assert [(link["number"], link["clicks"]) for link in did["links"]] == [(1, 3), (2, 1)]
    assert sum(minute["sent"] for minute in did["sent_per_minute"]) == 2


def test_edition_show_says_when_clicks_are_not_counted(svc, console):
    clicks_newsroom(svc, count_clicks=False)
    with transaction(svc.Session) as session:
        assert session.query(Edition).count() == 1
    code, out, err = console("edition", "show", "morning/1")
    assert code == 0, err
    assert "clicks:       not counted" in out and "--count-clicks" in out
