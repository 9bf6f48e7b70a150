"""What worked, on the desk: click counting turned on in a newsletter's settings, an edition's rates and clicks
per story (a table and small SVG charts drawn on the server), and the rates across a newsletter's last
editions; the same numbers in the desk's API."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from conftest import SHOTS, clicks_newsroom, counted_links, sign_in_browser
from desk_client import PASSWORD, add_editor, api_headers, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.models import Article, Delivery, SubscriberEvent, utcnow
from syndicate.newsletters import lists
from syndicate.web.app import create_app

HOSTILE = 'Story <script>alert("t")</script> & more'


def settings_form(**changes) -> dict:
    form = dict(name="Morning", from_name="Morning", from_address="news@example.com", reply_to="",
                subject_template="{{ top.title }}", template="edition", cron="", timezone="UTC", max_items="20",
                categories_include="", categories_exclude="", breaking_categories="")
    return form | changes


@pytest.fixture
def sent(svc) -> int:
    """An edition gone out to two readers, one of whom complained; story 1 (with a hostile title) clicked
    by three readers, story 2 by one."""
    edition_id = clicks_newsroom(svc)
    now = utcnow()
    with transaction(svc.Session) as session:
        rows = session.query(Delivery).filter_by(edition_id=edition_id).order_by(Delivery.id).all()
        for row in rows:
            row.status, row.sent_at = "sent", now
        session.add(SubscriberEvent(subscriber_id=rows[1].subscriber_id, delivery_id=rows[1].id, kind="complaint",
                                    source="ses"))
        session.query(Article).filter_by(title="Story 0").one().title = HOSTILE
    first, second = counted_links(svc, edition_id)
    for n in range(3):
        with TestClient(create_app(), client=(f"203.0.113.{n + 1}", 40000), follow_redirects=False) as reader:
            reader.get(first)
            if n == 0:
                reader.get(second)
    add_editor(svc)
    return edition_id


def test_an_editor_turns_click_counting_on_and_off_in_the_settings(svc):
    clicks_newsroom(svc, count_clicks=False, start=False)
    add_editor(svc)
    client = desk_client()
    token = sign_in(client)
    assert 'name="count_clicks"' in client.get("/desk/newsletters/morning").text
    assert client.post("/desk/newsletters/morning", data=settings_form(csrf=token, count_clicks="true")) \
        .status_code == 303
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").count_clicks is True
    assert re.search(r'name="count_clicks" value="true" checked', client.get("/desk/newsletters/morning").text)
    client.post("/desk/newsletters/morning", data=settings_form(csrf=token))  # unticked: absent from the form
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").count_clicks is False


def test_the_edition_page_shows_rates_clicks_per_story_and_charts(svc, sent):
    client = desk_client()
    sign_in(client)
    page = client.get(f"/desk/editions/{sent}").text
    rates = page[page.index('id="rates"'):page.index("</table>", page.index('id="rates"'))]
    assert re.search(r'data-rate="complained">50\.0%', rates) and re.search(r'data-rate="bounced">0\.0%', rates)
    assert "4 <span" in rates and "200.0% of delivered" in rates
    assert re.search(r'data-clicks="1">3<', page) and re.search(r'data-clicks="2">1<', page)
    pace, clicks = (page[page.index(f'id="{name}"'):page.index("</figure>", page.index(f'id="{name}"'))]
                    for name in ("chart-pace", "chart-clicks"))
    assert "<svg" in pace and "<rect" in pace
    assert clicks.count("<rect") == 2 and "<script>" not in clicks and "&lt;script&gt;" in clicks


def test_an_edition_not_counting_clicks_says_so(svc):
    edition_id = clicks_newsroom(svc, count_clicks=False)
    add_editor(svc)
    client = desk_client()
    sign_in(client)
    page = client.get(f"/desk/editions/{edition_id}").text
    assert "not counted" in page and 'id="chart-clicks"' not in page


def test_the_newsletter_page_charts_rates_across_the_last_editions(svc, sent):
    client = desk_client()
    sign_in(client)
    page = client.get("/desk/newsletters/morning").text
    assert "Across the last editions" in page
    chart = page[page.index('id="chart-rates"'):page.index("</figure>", page.index('id="chart-rates"'))]
    assert "<svg" in chart and "complained 50.00%" in chart
    assert 'id="chart-click-rates"' in page


def test_the_desk_api_gives_the_same_numbers(svc, sent):
    client, headers = desk_client(), api_headers(svc)
    described = client.get(f"/api/v1/editions/{sent}", headers=headers).json()["results"]
    assert described["delivered"] == 2 and described["complained"] == 1 and described["clicks"] == 4
    assert [link["clicks"] for link in described["links"]] == [3, 1]
    across = client.get("/api/v1/newsletters/morning", headers=headers).json()["across"]
    assert across[0]["rates"]["complained"] == 0.5


def test_the_charts_draw_in_a_browser_under_the_pages_policy(browser, served, svc, sent):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    sign_in_browser(page, served, "ada", PASSWORD, f"/desk/editions/{sent}")
    bars = page.locator("#chart-clicks svg rect")
    assert bars.count() == 2 and bars.first.bounding_box()["width"] > bars.nth(1).bounding_box()["width"] > 0
    assert page.locator("#chart-pace svg rect").count() >= 1
    assert page.locator("#chart-clicks svg text").first.text_content() == HOSTILE  # shown as text, not run
    SHOTS.mkdir(exist_ok=True)
    page.locator("#rates").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "edition-results.png"), full_page=True)
    page.goto(served + "/desk/newsletters/morning")
    assert page.locator("#chart-rates svg circle").count() == 3  # one edition, three rates
    page.locator("#chart-rates").screenshot(path=str(SHOTS / "newsletter-rates.png"))
    assert refused == []
