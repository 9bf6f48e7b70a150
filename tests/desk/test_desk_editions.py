"""The desk's edition page and its API: the preview exactly as sent, edits that the preview follows, a test
that arrives at a real SMTP server, schedule / pause / resume / cancel / resend, live counts, and the checks
(Gmail's clip, the unsubscribe link, links that don't answer, asked of a real local HTTP server)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from conftest import configured
from desk_client import add_editor, api_headers, csrf, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.delivery import deliveries, qa, sending
from syndicate.delivery.batches import send_batch
from syndicate.delivery.copies import preview, send_tests
from syndicate.errors import InvalidInput
from syndicate.models import Article, Delivery, Edition, Newsletter, utcnow
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


def edition(svc, urls: list[str] | None = None, readers: int = 3, lead: str = "",
            **newsletter) -> tuple[int, list[int]]:
    """A draft edition of "The Morning Briefing" with a story per URL; its id and the stories' ids in order."""
    now = utcnow()
    urls = urls or [f"https://news.example/{i}" for i in range(3)]
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                    from_address="news@example.com", cron=None, timezone="Europe/Berlin",
                                    now=now - timedelta(hours=1), **newsletter)
        for i in range(readers):
            consent.subscribe(session, f"reader{i}@example.com", [made.id], confirmed=True)
        for i, url in enumerate(urls):
            session.add(Article(identity=f"story-{i}", url=url, title=f"Story number {i}", lead=lead or f"Lead {i}.",
                                content_hash=str(i), categories=[], published_at=now - timedelta(minutes=i),
                                first_seen_at=now))
        session.flush()
        draft = editions.create_edition(session, made, svc.settings, now=now, status="draft")
        return draft.id, [item.article_id for item in draft.items]


def stored(svc, edition_id: int) -> Edition:
    with transaction(svc.Session) as session:
        found = session.get(Edition, edition_id)
        found.items, found.newsletter  # noqa: B018 - loaded before the session closes
        session.expunge_all()
        return found


def send_now(svc, edition_id: int) -> None:
    """Start the edition and hand every batch to the real SMTP server, as workers would."""
    with transaction(svc.Session) as session:
        found = session.get(Edition, edition_id)
        editions.schedule(session, found, utcnow())
        batches = sending.start(session, found, svc.settings, utcnow())
    for edition_id_, lo, hi in batches:
        send_batch(svc.Session, svc.settings, svc.transport, edition_id_, lo, hi, token=f"t-{lo}")
    with transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, utcnow())


# ── the page and its preview ─────────────────────────────────────────────────


def test_nothing_of_an_edition_opens_without_a_session_or_a_token(client, svc):
    edition_id, _ = edition(svc)
    for path in ("/desk/editions", f"/desk/editions/{edition_id}", f"/desk/editions/{edition_id}/preview.html",
                 f"/desk/editions/{edition_id}/preview.txt", f"/desk/editions/{edition_id}/counts"):
        assert client.get(path).headers["location"] == f"/desk/login?next={path}"
        assert client.get(path, headers={"Accept": "application/json"}).status_code == 401
    assert client.post(f"/desk/editions/{edition_id}/pause").status_code == 403
    for method, path in (("GET", "/api/v1/editions"), ("GET", f"/api/v1/editions/{edition_id}/preview"),
                         ("PATCH", f"/api/v1/editions/{edition_id}"), ("POST", f"/api/v1/editions/{edition_id}/cancel"),
                         ("POST", f"/api/v1/editions/{edition_id}/test-send")):
        assert client.request(method, path).status_code == 401, path
    assert stored(svc, edition_id).status == "draft" and not svc.smtp.messages



def test_the_page_shows_the_edition_and_its_preview_exactly_as_a_reader_gets_it(client, svc):
    edition_id, _ = edition(svc)
    sign_in(client)
    page = client.get(f"/desk/editions/{edition_id}")
    assert page.status_code == 200
    for part in ("The Morning Briefing #1", 'id="edition-status">draft', "Story number 0", "news@example.com",
                 f'src="/desk/editions/{edition_id}/preview.html"', 'id="preview-phone"', 'id="preview-desktop"'):
        assert part in page.text, part

    html = client.get(f"/desk/editions/{edition_id}/preview.html")
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.headers["x-frame-options"] == "SAMEORIGIN"
    policy = html.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'self'" in policy and "script-src" not in policy
    # The recipient's own links are filled in, as at send (for a recipient who doesn't exist); the lines
    # only the public web view has are gone.
    assert re.search(r'href="http://testserver/u/[\w.-]+"', html.text)
    assert "syndicate.invalid" not in html.text and "Subscribe to The Morning Briefing" not in html.text
    assert "<title>Story number 0 — and 2 more stories</title>" in html.text
    text = client.get(f"/desk/editions/{edition_id}/preview.txt")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert "Story number 2" in text.text and "http://testserver/u/" in text.text

    # What a real reader gets is the same, but for their own links.
    send_now(svc, edition_id)
    received = email.message_from_bytes(svc.smtp.messages[0].data, policy=email.policy.default)
    as_received = received.get_body(preferencelist=("html",)).get_content()
    personal = re.compile(r"http://testserver/[up]/[\w.-]+")
    assert personal.sub("LINK", as_received) == personal.sub("LINK", client.get(
        f"/desk/editions/{edition_id}/preview.html").text)


def test_the_list_of_editions_leads_to_each(client, svc):
    edition_id, _ = edition(svc)
    sign_in(client)
    page = client.get("/desk/editions").text
    assert f'href="/desk/editions/{edition_id}"' in page and "The Morning Briefing #1" in page


def test_an_edition_that_doesnt_exist_is_not_found(client, svc):
    sign_in(client)
    assert client.get("/desk/editions/99").status_code == 404
    assert client.get("/desk/editions/99/preview.html").status_code == 404


# ── editing ──────────────────────────────────────────────────────────────────


def test_the_subject_order_and_stories_change_and_the_preview_follows(client, svc):
    edition_id, (first, second, third) = edition(svc)
    sign_in(client)
    token = csrf(client, f"/desk/editions/{edition_id}")
    saved = client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "subject": "Hand-picked"})
    assert saved.status_code == 303 and saved.headers["location"] == f"/desk/editions/{edition_id}"
    assert "<title>Hand-picked</title>" in client.get(f"/desk/editions/{edition_id}/preview.html").text
    assert 'value="Hand-picked"' in client.get(f"/desk/editions/{edition_id}").text

    client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "subject": "Hand-picked", "down": first})
    assert [i.article_id for i in stored(svc, edition_id).items] == [second, first, third]
    client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "subject": "Hand-picked", "up": third})
    assert [i.article_id for i in stored(svc, edition_id).items] == [second, third, first]
    client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "subject": "Hand-picked", "remove": third})
    assert [i.article_id for i in stored(svc, edition_id).items] == [second, first]
    preview = client.get(f"/desk/editions/{edition_id}/preview.html").text
    assert preview.index("Story number 1") < preview.index("Story number 0") and "Story number 2" not in preview

    client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "subject": ""})  # the template's again
    found = stored(svc, edition_id)
    assert (found.custom_subject, found.subject) == (None, "Story number 1 — and 1 more story")


def test_a_sent_edition_cant_be_edited_and_says_why(client, svc, api):
    edition_id, (first, *_) = edition(svc)
    send_now(svc, edition_id)
    sign_in(client)
    token = csrf(client, f"/desk/editions/{edition_id}")
    refused = client.post(f"/desk/editions/{edition_id}/edit", data={"csrf": token, "subject": "Too late"})
    assert refused.status_code == 400 and "what was sent can&#39;t change" in refused.text
    assert 'name="subject"' not in refused.text  # no edit form for what went out
    answer = api.patch(f"/api/v1/editions/{edition_id}", json={"subject": "Too late"})
    assert answer.status_code == 422 and "what was sent can't change" in answer.json()["error"]
    assert api.patch(f"/api/v1/editions/{edition_id}", json={"remove": [first]}).status_code == 422
    assert stored(svc, edition_id).subject != "Too late"


def test_a_form_without_the_csrf_token_changes_nothing(client, svc):
    edition_id, _ = edition(svc)
    sign_in(client)
    for action, data in (("edit", {"subject": "Forged"}), ("pause", {}), ("cancel", {}),
                         ("test-send", {"addresses": "x@example.com"})):
        assert client.post(f"/desk/editions/{edition_id}/{action}", data=data).status_code == 403
        assert client.post(f"/desk/editions/{edition_id}/{action}", data={**data, "csrf": "forged"}
                           ).status_code == 403
    found = stored(svc, edition_id)
    assert (found.custom_subject, found.status) == (None, "draft") and not svc.smtp.messages


# ── schedule, pause, resume, cancel ──────────────────────────────────────────


def test_an_edition_is_scheduled_in_the_editors_zone_paused_resumed_and_cancelled(client, svc):
    edition_id, _ = edition(svc)
    sign_in(client)
    token = csrf(client, "/desk/account")
    client.post("/desk/account/timezone", data={"csrf": token, "timezone": "Asia/Tokyo"})
    page = f"/desk/editions/{edition_id}"

    bad = client.post(f"{page}/schedule", data={"csrf": token, "at": "tomorrow-ish"})
    assert bad.status_code == 400 and "is not a date and time" in bad.text
    assert client.post(f"{page}/schedule", data={"csrf": token, "at": "2030-01-02T07:30"}).status_code == 303
    found = stored(svc, edition_id)
    assert (found.status, found.scheduled_for) == ("scheduled", datetime(2030, 1, 1, 22, 30, tzinfo=UTC))
    shown = client.get(page).text
    assert 'value="2030-01-02T07:30"' in shown and "Wed 02 Jan 07:30 JST" in shown

    assert client.post(f"{page}/pause", data={"csrf": token}).status_code == 303
    assert stored(svc, edition_id).status == "paused"
    assert client.post(f"{page}/resume", data={"csrf": token}).status_code == 303
    assert stored(svc, edition_id).status == "scheduled"
    assert 'data-confirm="Cancel The Morning Briefing #1?' in client.get(page).text  # the browser asks first
    assert client.post(f"{page}/cancel", data={"csrf": token}).status_code == 303
    found = stored(svc, edition_id)
    assert found.status == "cancelled" and "its stories go into the next edition" in found.note
    again = client.post(f"{page}/resume", data={"csrf": token})
    assert again.status_code == 400 and "is cancelled; it can&#39;t become scheduled" in again.text


def test_pause_and_resume_go_back_to_the_page_they_came_from_on_the_desk_only(client, svc):
    edition_id, _ = edition(svc)
    with transaction(svc.Session) as session:
        editions.schedule(session, session.get(Edition, edition_id), utcnow() + timedelta(hours=3))
    sign_in(client)
    token = csrf(client, "/desk/editions")
    today = client.post(f"/desk/editions/{edition_id}/pause", data={"csrf": token},
                        headers={"Referer": "http://testserver/desk"})
    assert today.headers["location"] == "/desk"  # the Today page's button keeps the editor on Today
    elsewhere = client.post(f"/desk/editions/{edition_id}/resume",
                            data={"csrf": token, "next": "https://evil.example/desk"},
                            headers={"Referer": "https://evil.example/desk"})
    assert elsewhere.headers["location"] == f"/desk/editions/{edition_id}"
    named = client.post(f"/desk/editions/{edition_id}/pause", data={"csrf": token, "next": "/desk/newsletters"})
    assert named.headers["location"] == "/desk/newsletters"


# ── counts and resending ─────────────────────────────────────────────────────


def test_live_counts_follow_a_send_and_failed_recipients_are_sent_again(client, svc):
    edition_id, _ = edition(svc)
    svc.smtp.data_reply = "554 5.6.0 Message refused"  # the message, not the addresses: nobody is suppressed
    send_now(svc, edition_id)
    sign_in(client)
    answer = client.get(f"/desk/editions/{edition_id}/counts", headers={"Accept": "application/json"}).json()
    assert answer == {"status": "failed", "counts": {"waiting": 0, "pending": 0, "sending": 0, "sent": 0, "deferred": 0,
                                                     "failed": 3, "skipped": 0}}  # no reader got it
    page = client.get(f"/desk/editions/{edition_id}").text
    assert '<td data-count="failed">3</td>' in page and "Resend to the 3 failed" in page

    svc.smtp.data_reply = None
    token = csrf(client, f"/desk/editions/{edition_id}")
    assert client.post(f"/desk/editions/{edition_id}/resend-failed", data={"csrf": token}).status_code == 303
    # The batches were queued after the commit; here tasks run inline, as a worker would run them.
    with transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, utcnow())
    answer = client.get(f"/desk/editions/{edition_id}/counts").json()
    assert answer["counts"]["sent"] == 3 and answer["counts"]["failed"] == 0 and answer["status"] == "sent"
    assert sorted(r for m in svc.smtp.messages for r in m.recipients) == [f"reader{i}@example.com" for i in range(3)]


def test_counts_while_sending_and_a_signed_out_script_gets_401(client, svc):
    edition_id, _ = edition(svc)
    with transaction(svc.Session) as session:
        found = session.get(Edition, edition_id)
        editions.schedule(session, found, utcnow())
        sending.start(session, found, svc.settings, utcnow())  # fanned out, no worker yet
    assert client.get(f"/desk/editions/{edition_id}/counts",
                      headers={"Accept": "application/json"}).status_code == 401
    sign_in(client)
    assert client.get(f"/desk/editions/{edition_id}/counts").json()["counts"]["pending"] == 3
    page = client.get(f"/desk/editions/{edition_id}").text
    assert 'data-status="sending"' in page and "setInterval" in page and "Going out now" in page


# ── a test send ──────────────────────────────────────────────────────────────


def test_a_test_arrives_at_the_given_addresses_marked_as_a_test(client, svc):
    edition_id, _ = edition(svc)
    sign_in(client)
    token = csrf(client, f"/desk/editions/{edition_id}")
    bad = client.post(f"/desk/editions/{edition_id}/test-send", data={"csrf": token, "addresses": "not-an-address"})
    assert bad.status_code == 400 and "is not an email address" in bad.text and not svc.smtp.messages
    sent = client.post(f"/desk/editions/{edition_id}/test-send",
                       data={"csrf": token, "addresses": "editor@example.com,\n desk@example.org"})
    assert sent.status_code == 303 and sent.headers["location"] == f"/desk/editions/{edition_id}"
    shown = client.get(f"/desk/editions/{edition_id}").text
    assert 'id="test-results"' in shown and "editor@example.com" in shown
    assert 'id="test-results"' not in client.get(f"/desk/editions/{edition_id}").text  # shown once; nothing re-sent
    assert len(svc.smtp.messages) == 2
    received = [email.message_from_bytes(m.data, policy=email.policy.default) for m in svc.smtp.messages]
    subject = stored(svc, edition_id).subject
    assert sorted(m["To"] for m in received) == ["desk@example.org", "editor@example.com"]
    assert {m["Subject"] for m in received} == {f"[Test] {subject}"}
    assert all(m["X-Syndicate-Test"] for m in received)
    with transaction(svc.Session) as session:
        assert not session.scalars(select(Delivery)).all()  # nobody is counted


def test_a_mail_server_that_is_down_is_said_plainly(make_settings, tmp_path, closed_port):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'down.db'}",
                                   smtp_url=f"smtp://127.0.0.1:{closed_port}"))
    add_editor(svc)
    headers = api_headers(svc)
    edition_id, _ = edition(svc)
    client = desk_client()
    sign_in(client)
    page = client.post(f"/desk/editions/{edition_id}/test-send",
                       data={"csrf": csrf(client, f"/desk/editions/{edition_id}"), "addresses": "qa@example.com"})
    assert page.status_code == 502 and "cannot reach the mail server" in page.text
    assert "qa@example.com</textarea>" in page.text  # what was typed stays
    answer = client.post(f"/api/v1/editions/{edition_id}/test-send", json={"addresses": ["qa@example.com"]},
                         headers=headers)
    assert answer.status_code == 502 and "cannot reach the mail server" in answer.json()["error"]


# ── checks: Gmail's clip, the unsubscribe link, links that don't answer ───────


def test_an_oversized_edition_warns_before_it_goes(client, svc, api):
    edition_id, _ = edition(svc, lead="A very long lead. " * 2500)  # ~45 KB a story, three stories
    sign_in(client)
    page = client.get(f"/desk/editions/{edition_id}").text
    assert 'id="warnings"' in page and "Gmail clips messages over 102 KB" in page
    assert any("Gmail clips" in w for w in api.get(f"/api/v1/editions/{edition_id}").json()["warnings"])


def test_an_edition_the_checks_stop_is_scheduled_only_once_an_editor_lets_the_check_pass(client, svc, api):
    edition_id, _ = edition(svc, lead="A very long lead. " * 2500)
    sign_in(client)
    page = f"/desk/editions/{edition_id}"
    refused = client.post(f"{page}/schedule", data={"csrf": csrf(client, page), "at": "2030-01-02T07:30"})
    assert refused.status_code == 400 and "[size]" in refused.text and 'id="override"' in refused.text
    assert stored(svc, edition_id).status == "draft"

    no_reason = client.post(f"{page}/override", data={"csrf": csrf(client, page), "check": "size", "reason": " "})
    assert no_reason.status_code == 400 and "say why" in no_reason.text
    let_pass = client.post(f"{page}/override", data={"csrf": csrf(client, page), "check": "size",
                                                     "reason": "the year in review: long on purpose"})
    assert let_pass.status_code == 303
    shown = client.get(page).text
    assert 'id="overrides"' in shown and "by ada" in shown and "the year in review: long on purpose" in shown
    assert 'id="override"' not in shown  # nothing left to let pass
    assert client.post(f"{page}/schedule", data={"csrf": csrf(client, page), "at": "2030-01-02T07:30"}
                       ).status_code == 303
    assert stored(svc, edition_id).status == "scheduled"
    described = api.get(f"/api/v1/editions/{edition_id}").json()
    assert [o["check"] for o in described["overrides"]] == ["size"] and described["blocking"] == []


def test_the_api_schedules_past_the_checks_only_with_a_reason_and_never_in_the_past(client, svc, api):
    edition_id, _ = edition(svc, lead="A very long lead. " * 2500)
    path = f"/api/v1/editions/{edition_id}/schedule"
    refused = api.post(path, json={"at": "2030-06-01T07:00"})
    assert refused.status_code == 422 and "[size]" in refused.text
    assert api.post(path, json={"at": "2030-06-01T07:00", "override": ["size"]}).status_code == 422
    past = api.post(path, json={"at": "2020-06-01T07:00", "override": ["size"], "reason": "long on purpose"})
    assert past.status_code == 422 and "2020-06-01 07:00 Europe/Berlin is in the past" in past.text
    done = api.post(path, json={"at": "2030-06-01T07:00", "override": ["size"], "reason": "long on purpose"})
    assert done.status_code == 200 and done.json()["status"] == "scheduled"
    assert done.json()["overrides"][0]["reason"] == "long on purpose"


def test_a_blocked_edition_says_why_on_its_page(client, svc):
    edition_id, _ = edition(svc, lead="A very long lead. " * 2500)
    with transaction(svc.Session) as session:
        found = session.get(Edition, edition_id)
        found.status, found.scheduled_for = "scheduled", utcnow()
        sending.start(session, found, svc.settings, utcnow())
    sign_in(client)
    page = client.get(f"/desk/editions/{edition_id}").text
    assert 'id="edition-status">blocked' in page and "blocked by the pre-send checks" in page
    assert 'id="override"' in page and "Cancel edition" in page


def test_a_normal_edition_has_no_warnings(client, svc):
    edition_id, _ = edition(svc)
    sign_in(client)
    assert 'id="warnings"' not in client.get(f"/desk/editions/{edition_id}").text


def test_a_template_without_an_unsubscribe_link_is_warned_about(make_settings, tmp_path, smtp_server):
    folder = tmp_path / "templates" / "email" / "bare"
    folder.mkdir(parents=True)
    (folder / "body.html").write_text('<html><body>{% for a in articles %}<p><a href="{{ a.url }}">{{ a.title }}'
                                      "</a></p>{% endfor %}</body></html>")
    (folder / "body.txt").write_text("{% for a in articles %}{{ a.title }}\n{% endfor %}")
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'bare.db'}",
                                   template_dir=str(tmp_path / "templates")))
    add_editor(svc)
    edition_id, _ = edition(svc, template="bare")
    client = desk_client()
    sign_in(client)
    page = client.get(f"/desk/editions/{edition_id}").text
    assert "the HTML part has no unsubscribe link" in page and "email/bare/body.html" in page
    assert "the text part has no unsubscribe link" in page


def test_check_links_reports_the_links_that_dont_answer(client, svc, api, feed_server, closed_port):
    ok = feed_server.serve("/story/ok", b"<p>here</p>", **{"Content-Type": "text/html"})
    moved = feed_server.serve("/story/moved", b"", status=301, Location=ok)
    gone = f"{feed_server.base}/story/gone"  # not served: 404
    down = f"http://127.0.0.1:{closed_port}/story"
    edition_id, _ = edition(svc, urls=[ok, moved, gone, down])
    sign_in(client)
    token = csrf(client, f"/desk/editions/{edition_id}")
    assert not any(path.startswith("/story") for path, _ in feed_server.requests)  # never on page load
    page = client.post(f"/desk/editions/{edition_id}/check-links", data={"csrf": token})
    assert page.status_code == 200 and "2 of 4 links don" in page.text
    assert gone in page.text and ">404<" in page.text and down in page.text and ok + "<" not in page.text

    report = api.post(f"/api/v1/editions/{edition_id}/check-links").json()
    assert report["checked"] == 4 and report["left_out"] == 0
    broken = {b["url"]: b for b in report["broken"]}
    assert set(broken) == {gone, down}
    assert broken[gone]["status"] == 404 and broken[down]["status"] is None and broken[down]["error"]


def test_links_on_our_own_network_are_refused_unless_allowed(svc):
    edition_id, _ = edition(svc, urls=["http://127.0.0.1:9/story"])
    strict = dataclasses.replace(svc.settings, allow_private_feeds=False)
    report = qa.check_links(strict, stored(svc, edition_id))
    [refused] = report.broken
    assert "private or local address" in refused["error"]


def test_only_the_editions_own_links_are_asked_not_the_readers_or_ours(svc):
    edition_id, _ = edition(svc, urls=["https://news.example/a#top", "https://news.example/a", "mailto:x@y.z"])
    html = qa.parts(preview(svc.settings, stored(svc, edition_id).newsletter,
                                               stored(svc, edition_id)))[0]
    assert qa.links(html, svc.settings) == ["https://news.example/a"]


# ── the domain functions the desk calls ──────────────────────────────────────


def test_send_tests_refuses_too_many_or_no_addresses(svc):
    edition_id, _ = edition(svc)
    found = stored(svc, edition_id)
    for addresses, why in (([], "at least one"), ([f"a{i}@example.com" for i in range(21)], "at most 20")):
        with pytest.raises(InvalidInput, match=why):
            send_tests(svc.settings, svc.transport, found.newsletter, found, addresses)
    [result] = send_tests(svc.settings, svc.transport, found.newsletter, found,
                          ["Editor@Example.com", "editor@example.com"])  # one address, once
    assert result["address"] == "editor@example.com" and result["accepted"]


def test_counts_of_gives_every_status_for_each_edition(svc):
    edition_id, _ = edition(svc)
    send_now(svc, edition_id)
    counts = deliveries.counts_of(svc.Session(), [edition_id, 999])
    assert counts[edition_id]["sent"] == 3 and counts[999] == dict.fromkeys(deliveries.STATUSES, 0)


def test_can_edit_holds_until_the_edition_starts(svc):
    edition_id, _ = edition(svc)
    assert editions.can_edit(stored(svc, edition_id))
    send_now(svc, edition_id)
    assert not editions.can_edit(stored(svc, edition_id))


# ── the API ──────────────────────────────────────────────────────────────────


def test_the_api_does_what_the_page_does(api, svc):
    edition_id, (first, second, third) = edition(svc)
    [listed] = api.get("/api/v1/editions").json()
    assert listed["id"] == edition_id and listed["status"] == "draft" and listed["counts"]["sent"] == 0
    assert api.get("/api/v1/editions", params={"newsletter": "other"}).json() == []
    one = api.get(f"/api/v1/editions/{edition_id}").json()
    assert [s["id"] for s in one["stories"]] == [first, second, third] and one["editable"] and one["warnings"] == []

    edited = api.patch(f"/api/v1/editions/{edition_id}", json={"subject": "By script", "order": [third],
                                                               "remove": [second]}).json()
    assert edited["subject"] == "By script" and [s["id"] for s in edited["stories"]] == [third, first]
    preview = api.get(f"/api/v1/editions/{edition_id}/preview").json()
    assert preview["subject"] == "By script" and "<title>By script</title>" in preview["html"]
    assert "Story number 2" in preview["text"]
    unknown = api.patch(f"/api/v1/editions/{edition_id}", json={"remove": [12345]})
    assert unknown.status_code == 422 and "is not in edition #1" in unknown.json()["error"]

    scheduled = api.post(f"/api/v1/editions/{edition_id}/schedule", json={"at": "2030-06-01T07:00"}).json()
    assert scheduled["status"] == "scheduled"
    assert scheduled["scheduled_for"].startswith("2030-06-01T05:00")  # 07:00 in Berlin, the newsletter's zone
    assert api.post(f"/api/v1/editions/{edition_id}/pause").json()["status"] == "paused"
    assert api.post(f"/api/v1/editions/{edition_id}/resume").json()["status"] == "scheduled"
    assert api.post(f"/api/v1/editions/{edition_id}/explode").status_code == 422
    assert api.get(f"/api/v1/editions/{edition_id}/counts").json()["status"] == "scheduled"

    [sent] = api.post(f"/api/v1/editions/{edition_id}/test-send", json={"addresses": ["qa@example.com"]}).json()
    assert sent["accepted"] and svc.smtp.messages[-1].recipients == ["qa@example.com"]
    cancelled = api.post(f"/api/v1/editions/{edition_id}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["skipped"] == 0
    assert api.get("/api/v1/editions/999").status_code == 404


def test_the_api_resends_to_the_failed_and_queues_the_batches(api, svc):
    edition_id, _ = edition(svc)
    svc.smtp.data_reply = "554 5.6.0 Message refused"
    send_now(svc, edition_id)
    svc.smtp.data_reply = None
    answer = api.post(f"/api/v1/editions/{edition_id}/resend-failed").json()
    assert answer["batches_queued"] == 1 and answer["left_out"] == 0
    with transaction(svc.Session) as session:  # the inline task ran after the commit
        assert {d.status for d in session.scalars(select(Delivery))} == {"sent"}
        assert session.scalar(select(Newsletter.slug)) == "morning"


def test_an_edition_no_reader_got_is_first_on_today_with_why(svc, client):
    """The relay refused every message: Today shows the edition as failed, with the server's words."""
    edition_id, _ = edition(svc, readers=2)
    svc.smtp.data_reply = "554 5.7.1 Sender address rejected: not owned by this account"
    send_now(svc, edition_id)
    with transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, utcnow())
    sign_in(client)
    today = client.get("/desk").text
    row = today[today.index('<table id="editions">'):today.index("</table>", today.index('<table id="editions">'))]
    assert '<span class="status failed">failed</span>' in row
    assert "no reader got it: all 2 deliveries failed" in row and "Sender address rejected" in row
    assert f'href="/desk/editions/{edition_id}"' in row
