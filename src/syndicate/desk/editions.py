"""One edition: its preview exactly as sent (HTML at desktop and phone widths, and text), its stories and
subject edited, a test sent, scheduled, paused, resumed, cancelled, sent again to those it failed for; live
counts while it goes out, and the checks that say what would hurt it in readers' inboxes."""

from __future__ import annotations

import re
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery import deliveries, qa, results, sending, waves
from syndicate.delivery.copies import MAX_TEST_ADDRESSES, preview, send_tests
from syndicate.delivery.qa import parts
from syndicate.desk import charts
from syndicate.desk.core import (
    Svc,
    api,
    api_editor,
    back,
    csrf_checked,
    editor,
    editor_zone,
    local_time,
    page,
    pages,
)
from syndicate.errors import InvalidInput, NotFound, TransportError
from syndicate.http import csp
from syndicate.ingest import stored as articles
from syndicate.models import Edition, EditionArticle, RowId
from syndicate.newsletters import editions, rendering, schedules, stored
from syndicate.services import Services
from syndicate.tasks import deliver_batch, hand_over

RECENT = 50  # editions on the list page
# The preview is the newsletter's own HTML, shown inside the desk: no script, nothing sent anywhere but
# image requests (as a reader's mail program would), framed only by the desk itself.
PREVIEW_HEADERS = {
    **csp.sandboxed(framed_by_desk=True),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # after an edit the frame shows the new render, not a cached one
}


def _edition(session, edition_id: int) -> Edition:
    return stored.edition_by_id(session, edition_id, f"no edition {edition_id}; /desk/editions lists them")


def _summary(edition: Edition, counts: dict[str, int]) -> dict:
    return dict(id=edition.id, newsletter=edition.newsletter.name, slug=edition.newsletter.slug,
                number=edition.number, kind=edition.kind, status=edition.status, subject=edition.subject,
                scheduled_for=edition.scheduled_for, sent_at=edition.sent_at, counts=counts,
                link=f"/desk/editions/{edition.id}")


def _describe(session, settings: Settings, edition: Edition) -> dict:
    """Everything the page and the API show of one edition."""
    counts = deliveries.counts_of(session, [edition.id])[edition.id]
    newsletter = edition.newsletter
    # The checks as the edition would go now; a story's link only as last asked (a page view asks nothing).
    found = qa.review(session, settings, edition, ask=False) if edition.html else None
    return _summary(edition, counts) | dict(
        custom_subject=edition.custom_subject, note=edition.note, started_at=edition.started_at,
        intro=edition.intro, sponsor_text=edition.sponsor_text, sponsor_url=edition.sponsor_url, slot=edition.slot,
        sender=f"{newsletter.from_name} <{newsletter.from_address}>", timezone=newsletter.timezone,
        editable=editions.can_edit(edition), has_content=bool(edition.html),
        html_bytes=len(edition.html.encode()), web_url=rendering.web_url(settings, newsletter, edition),
        stories=[dict(id=item.article_id, title=item.article.title, url=item.article.url, blurb=item.blurb)
                 for item in edition.items],
        blocking=found.blocking if found else [], overridden=found.overridden if found else [],
        overrides=edition.overrides or [], checks=list(qa.BLOCKING), left_out_for_age=edition.left_out_for_age,
        warnings=[f["message"] for f in found.blocking] + found.warnings if found else [],
        # What it did: rates of delivered, clicks per story (if counted), the send per minute.
        results=results.of_edition(session, edition) if edition.started_at else None,
        # At each reader's local time: the waves, done and to come (None: everyone at once).
        waves=waves.summary(session, edition))


def _recent(session, slug: str | None = None, status: str | None = None, limit: int = RECENT) -> list[dict]:
    found = stored.recent_editions(session, slug, (status,) if status else (), limit)
    counts = deliveries.counts_of(session, [e.id for e in found])
    return [_summary(e, counts[e.id]) for e in found]


def _counts(svc: Services, edition_id: int) -> dict:
    with transaction(svc.Session) as session:
        edition = _edition(session, edition_id)
        return dict(status=edition.status, counts=deliveries.counts_of(session, [edition_id])[edition_id])


def _preview(svc: Services, edition_id: int) -> tuple[str, str, str]:
    """Subject, HTML and text exactly as a recipient gets them."""
    with transaction(svc.Session) as session:
        edition = _edition(session, edition_id)
        if not edition.html:
            raise NotFound(f"edition #{edition.number} has nothing to show ({edition.status}: {edition.note})")
        message = preview(svc.settings, edition.newsletter, edition)
        return (message["Subject"], *parts(message))


def _edit(svc: Services, edition_id: int, subject: str | None = None, order: list[int] | None = None,
          remove: list[int] = (), **words) -> dict:
    """As `syndicate edition edit` and `edition add`: `words` are add, intro, blurbs, sponsor_text, sponsor_url."""
    with transaction(svc.Session) as session:
        edition = editions.edit(session, _edition(session, edition_id), svc.settings,
                                remove=list(remove), order=order, subject=subject, **words)
        return _describe(session, svc.settings, edition)


FOUND = 10  # stories the edition page's search shows


def _search(svc: Services, edition_id: int, q: str) -> list[dict]:
    """Stories whose title or link has `q`, newest first, with whether each can go in this edition."""
    if not q.strip():
        return []
    with transaction(svc.Session) as session:
        edition = _edition(session, edition_id)
        taken = dict(session.execute(
            select(EditionArticle.article_id, Edition.number).join(Edition, Edition.id == EditionArticle.edition_id)
            .where(EditionArticle.newsletter_id == edition.newsletter_id)).all())
        return [dict(id=a.id, title=a.title, url=a.url, published_at=a.published_at, categories=a.categories or [],
                     withdrawn=a.withdrawn_at is not None, in_edition=taken.get(a.id))
                for a in articles.newest_articles(session, FOUND, q=q[:200])]


def _move(svc: Services, edition_id: int, article_id: int, by: int) -> list[int]:
    """The edition's stories in order, with one moved a place up (-1) or down (+1)."""
    with transaction(svc.Session) as session:
        ids = [item.article_id for item in _edition(session, edition_id).items]
    if article_id not in ids:
        raise InvalidInput(f"article {article_id} is not in this edition; reload the page")
    at = ids.index(article_id)
    to = min(max(at + by, 0), len(ids) - 1)
    ids[at], ids[to] = ids[to], ids[at]
    return ids


def _schedule(svc: Services, edition_id: int, at: str, zone: str | None = None, *, by: str,
              override: list[str] = (), reason: str | None = None) -> dict:
    """At `at`, read in `zone` (the editor's) or else in the newsletter's own zone, unless it names one; the
    pre-send checks must pass, or be let pass with a reason."""
    with transaction(svc.Session) as session:
        edition = _edition(session, edition_id)
        zone = zone or edition.newsletter.timezone
        when = local_time(at, zone)
        schedules.check_time(when.astimezone(ZoneInfo(zone)))  # a time past is told in the zone it was typed in
        sending.schedule(session, edition, svc.settings, when, override=override, reason=reason, by=by)
        return _describe(session, svc.settings, edition)


def _override(svc: Services, edition_id: int, check: str, reason: str, by: str) -> dict:
    """Let one check pass for this edition, kept with who and why; it is scheduled as it was."""
    with transaction(svc.Session) as session:
        edition = _edition(session, edition_id)
        if not editions.can_edit(edition):
            raise InvalidInput(f"edition #{edition.number} is {edition.status}: its checks are behind it")
        qa.override(edition, [check], reason, by)
        qa.gate(session, svc.settings, edition, ask=False)
        return _describe(session, svc.settings, edition)


ACTIONS = ("pause", "resume", "cancel", "resend-failed")


def _act(svc: Services, edition_id: int, action: str) -> dict:
    batches, result = [], {}
    with transaction(svc.Session) as session:
        edition = _edition(session, edition_id)
        if action == "pause":
            editions.pause(session, edition)
        elif action == "resume":
            batches = sending.resume(session, edition, svc.settings)
        elif action == "cancel":
            result["skipped"] = editions.cancel(session, edition)
        elif action == "resend-failed":
            batches, result["left_out"] = sending.resend_failed(session, edition, svc.settings)
        else:
            raise InvalidInput(f"no edition action {action!r}: {', '.join(ACTIONS)}")
        described = _describe(session, svc.settings, edition)
    for batch in batches:  # after the commit: a worker must find the rows sending
        hand_over(deliver_batch, *batch)  # the broker away: the tick hands out rows left pending
    return described | result | dict(batches_queued=len(batches))


def _loaded(svc: Services, edition_id: int) -> Edition:
    """The edition and its newsletter, read and let go: what follows talks to other servers, and on SQLite
    an open transaction holds the database's write lock."""
    with transaction(svc.Session) as session:
        edition = _edition(session, edition_id)
        edition.newsletter  # noqa: B018 - loaded now, used after the session
    return edition


def _test_send(svc: Services, edition_id: int, addresses: list[str]) -> list[dict]:
    """As `syndicate edition test-send` does: the [Test] messages, over one connection."""
    edition = _loaded(svc, edition_id)
    return send_tests(svc.settings, svc.transport, edition.newsletter, edition, addresses)


def _check_links(svc: Services, edition_id: int) -> dict:
    report = qa.check_links(svc.settings, _loaded(svc, edition_id))
    return dict(checked=report.checked, broken=report.broken, left_out=report.left_out)


def _addresses(text: str) -> list[str]:
    """Addresses typed one a line, or separated by commas, semicolons or spaces."""
    return [a for a in re.split(r"[\s,;]+", text) if a]


# ── pages ────────────────────────────────────────────────────────────────────


@pages.get("/editions", response_class=HTMLResponse)
def editions_page(request: Request, svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        recent = _recent(session)
    return page("editions", request, editor=name, editions=recent)


@pages.get("/editions/{edition_id}", response_class=HTMLResponse)
def edition_page(request: Request, edition_id: RowId, svc: Svc, name: str = Depends(editor), q: str = ""):
    # What a test-send answered, handed over from its POST: a reload of this page sends nothing again.
    handed, sent = request.session.pop("test_sent", None), None
    if handed and handed[0] == edition_id:
        sent = [dict(address=address, accepted=accepted, reply=reply) for address, accepted, reply in handed[1]]
    return _page(request, svc, edition_id, name, sent=sent, q=q, found=_search(svc, edition_id, q))


def _page(request: Request, svc: Services, edition_id: int, name: str, status: int = 200, error: str | None = None,
          **answers) -> HTMLResponse:
    with transaction(svc.Session) as session:
        edition = _describe(session, svc.settings, _edition(session, edition_id))
    local = edition["scheduled_for"].astimezone(editor_zone(request)) if edition["scheduled_for"] else None
    context = dict(sent=None, links=None, addresses="", q="", found=[]) | answers
    return page("edition", request, status, editor=name, e=edition, error=error,
                at=local.strftime("%Y-%m-%dT%H:%M") if local else "", charts=_charts(request, edition), **context)


def _charts(request: Request, edition: dict) -> dict:
    """The edition's send and clicks as pictures, for a person who'd rather look than read."""
    did = edition["results"]
    if not did:
        return {}
    return dict(
        pace=charts.per_minute(did["sent_per_minute"], "Messages the mail server took, per minute",
                               editor_zone(request)),
        clicks=charts.bars([(link["title"], link["clicks"]) for link in did["links"]], "Clicks per story"))


@pages.get("/editions/{edition_id}/preview.html")
def preview_html(edition_id: RowId, svc: Svc, name: str = Depends(editor)):
    """The HTML part as a recipient gets it, for the desk's frames."""
    return Response(_preview(svc, edition_id)[1], media_type="text/html; charset=utf-8", headers=PREVIEW_HEADERS)


@pages.get("/editions/{edition_id}/preview.txt")
def preview_text(edition_id: RowId, svc: Svc, name: str = Depends(editor)):
    """The text part as a recipient gets it."""
    return Response(_preview(svc, edition_id)[2], media_type="text/plain; charset=utf-8", headers=PREVIEW_HEADERS)


@pages.get("/editions/{edition_id}/counts")
def counts(edition_id: RowId, svc: Svc, name: str = Depends(editor)) -> dict:
    """Deliveries by status, for the page's live counts while it goes out."""
    return _counts(svc, edition_id)


@pages.post("/editions/{edition_id}/{action}", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def edition_action(request: Request, edition_id: RowId, action: str, svc: Svc, name: str = Depends(editor),
                   subject: str = Form(""), up: RowId | None = Form(None), down: RowId | None = Form(None),
                   remove: RowId | None = Form(None), add: RowId | None = Form(None), intro: str = Form(""),
                   blurb_of: list[RowId] = Form([]), blurb: list[str] = Form([]),
                   sponsor_text: str = Form(""), sponsor_url: str = Form(""),
                   at: str = Form(""), addresses: str = Form(""), next: str = Form(""), check: str = Form(""),
                   reason: str = Form("")):
    """Every button of the edition page (and the Today page's pause and resume)."""
    try:
        if action == "edit" and add is not None:  # a search result's button: only that story, the rest as it is
            _edit(svc, edition_id, add=[add])
        elif action == "edit":  # the form as typed (an empty subject: the template's), and what a button asked
            moved = up if up is not None else down
            order = _move(svc, edition_id, moved, -1 if up is not None else 1) if moved is not None else None
            if len(blurb_of) != len(blurb):
                raise InvalidInput("the form's blurbs don't match its stories; reload the page")
            _edit(svc, edition_id, subject=subject, order=order, remove=[remove] if remove is not None else [],
                  intro=intro, blurbs=dict(zip(blurb_of, blurb, strict=True)),
                  sponsor_text=sponsor_text, sponsor_url=sponsor_url)
        elif action == "schedule":
            _schedule(svc, edition_id, at, editor_zone(request).key, by=name)
        elif action == "override":
            _override(svc, edition_id, check, reason, name)
        elif action == "test-send":
            sent = _test_send(svc, edition_id, _addresses(addresses))
            # Kept in the session cookie for the page after the redirect (20 addresses at most; the replies
            # shortened, so the cookie stays well under the 4 KB browsers keep).
            request.session["test_sent"] = [edition_id, [(r["address"], r["accepted"], r["reply"][:80])
                                                         for r in sent]]
            return back(f"/desk/editions/{edition_id}")
        elif action == "check-links":
            return _page(request, svc, edition_id, name, links=_check_links(svc, edition_id))
        else:
            _act(svc, edition_id, action)
    except InvalidInput as e:  # the page again, saying why; nothing changed
        return _page(request, svc, edition_id, name, 400, error=str(e), addresses=addresses)
    except TransportError as e:
        return _page(request, svc, edition_id, name, 502, error=f"the mail server didn't take the test: {e}",
                     addresses=addresses)
    return back(_landing(request, next, f"/desk/editions/{edition_id}"))


def _landing(request: Request, next: str, default: str) -> str:
    """Where a form's POST goes back to: the desk page it names, else the desk page it came from (the Today
    page's buttons keep the editor on Today), else `default`."""
    referer = urlsplit(request.headers.get("referer", ""))
    came_from = referer.path + (f"?{referer.query}" if referer.query else "") \
        if referer.netloc == request.url.netloc else ""
    for target in (next, came_from):
        if target.startswith("/desk") and not target.startswith(("/desk//", "/desk\\")):
            return target
    return default


# ── the same, for scripts ────────────────────────────────────────────────────


class EditionChanges(BaseModel):
    subject: str | None = Field(None, description="a subject of your own; \"\" goes back to the newsletter's "
                                                  "subject template; left out: unchanged")
    order: list[RowId] | None = Field(None, description="article ids in the order wanted; the rest follow")
    remove: list[RowId] = Field([], description="article ids to take out (free for the next edition)")
    add: list[RowId] = Field([], description="article ids to add at the end, whatever the newsletter's filters say "
                                             "(not one in another edition of the newsletter, nor a withdrawn one)")
    intro: str | None = Field(None, description="an editor's note above the stories, Markdown; \"\" takes it away")
    blurbs: dict[RowId, str] = Field({}, description="the editor's words on a story (by article id), above its "
                                                      "lead, Markdown; \"\" takes one away")
    sponsor_text: str | None = Field(None, description="a sponsor's line, marked Sponsored; \"\" takes the block away")
    sponsor_url: str | None = Field(None, description="the sponsor's link, http(s); \"\" for none")


class When(BaseModel):
    at: str = Field(description="ISO 8601, e.g. 2026-12-01T07:00; without an offset, in the newsletter's zone; "
                                "not in the past")
    override: list[str] = Field([], description="pre-send checks to let pass for this edition: unsubscribe, "
                                                "size, links, text-links")
    reason: str | None = Field(None, description="why they may pass (required with override; kept, with who)")


class TestSend(BaseModel):
    addresses: list[str] = Field(description=f"at most {MAX_TEST_ADDRESSES} addresses")


@api.get("/editions", tags=["editions"])
def editions_json(svc: Svc, newsletter: str | None = None, status: str | None = None,
                  limit: int = Query(RECENT, ge=1, le=500), name: str = Depends(api_editor)) -> list[dict]:
    """Recent editions, newest first, with their deliveries by status; of one newsletter (its slug) or
    with one status if asked."""
    with transaction(svc.Session) as session:
        return _recent(session, newsletter, status, limit)


@api.get("/editions/{edition_id}", tags=["editions"])
def edition_json(edition_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """One edition: status, schedule, subject, stories, deliveries by status, and the checks' warnings
    (Gmail's 102 KB clip, the unsubscribe link and header)."""
    with transaction(svc.Session) as session:
        return _describe(session, svc.settings, _edition(session, edition_id))


@api.get("/editions/{edition_id}/counts", tags=["editions"])
def counts_json(edition_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """The edition's status and its deliveries by status: cheap enough to poll during a send."""
    return _counts(svc, edition_id)


@api.get("/editions/{edition_id}/preview", tags=["editions"])
def preview_json(edition_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Subject, HTML and text exactly as a recipient gets them (their own links those of nobody)."""
    subject, html, text = _preview(svc, edition_id)
    return dict(subject=subject, html=html, text=text)


@api.patch("/editions/{edition_id}", tags=["editions"])
def edit_json(edition_id: RowId, body: EditionChanges, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Change an edition that hasn't started going out: subject, stories added, taken out and reordered, the
    intro, blurbs and the sponsor block. It is rendered again, once; a sent edition answers 422."""
    return _edit(svc, edition_id, body.subject, body.order, body.remove, add=body.add, intro=body.intro,
                 blurbs=body.blurbs, sponsor_text=body.sponsor_text, sponsor_url=body.sponsor_url)


@api.post("/editions/{edition_id}/schedule", tags=["editions"])
def schedule_json(edition_id: RowId, body: When, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Schedule or reschedule an edition that hasn't started, at a time ahead. The pre-send checks must
    pass (422 says which don't), or be let pass with `override` and a `reason`."""
    return _schedule(svc, edition_id, body.at, by=name, override=body.override, reason=body.reason)


@api.post("/editions/{edition_id}/test-send", tags=["editions"])
def test_send_json(edition_id: RowId, body: TestSend, svc: Svc, name: str = Depends(api_editor)):
    """Send the edition now to these addresses, marked [Test]; nobody is counted. Per address, whether
    the mail server took it and its reply; 502 if the server can't be reached."""
    try:
        return _test_send(svc, edition_id, body.addresses)
    except TransportError as e:
        return JSONResponse({"error": f"the mail server didn't take the test: {e}"}, status_code=502)


@api.post("/editions/{edition_id}/check-links", tags=["editions"])
def check_links_json(edition_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Ask every link of the edition (up to 100, within 10 s): those that answer 4xx/5xx, can't be reached
    or don't answer in time."""
    return _check_links(svc, edition_id)


@api.post("/editions/{edition_id}/{action}", tags=["editions"])
def action_json(edition_id: RowId, action: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Pause, resume, cancel or resend to failed.

    `pause` (stops before the next recipient), `resume`, `cancel` (nothing more goes out), or
    `resend-failed` (only to those it failed for who are still subscribed)."""
    return _act(svc, edition_id, action)
