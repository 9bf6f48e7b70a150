"""Subscribers: find them, read one's story (what they got, what was skipped and why), let them go or take
them back; bring a list in from CSV (a worker imports it while the page shows its progress, then the rows
not imported and why) and take the list out again."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator

from fastapi import Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from syndicate import db
from syndicate.db import transaction
from syndicate.desk.core import Svc, api, api_editor, back, confirmation, csrf_checked, editor, page, pages, ticked
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import Newsletter, RowId, SubscriberImport, utcnow
from syndicate.newsletters import lists, stored
from syndicate.services import Services
from syndicate.subscribers import consent, csv_files, preferences, rights, timeline, uploads

PROBLEMS_SHOWN = 200  # rows not imported listed on the page; the report's CSV has every one
# A request body is refused on its declared size before any of it is read: room for a file at the limit
# in a form, or escaped inside JSON. The file itself is held to UPLOAD_LIMIT by start_import.
BODY_LIMIT = 2 * uploads.UPLOAD_LIMIT


# ── finding subscribers ──────────────────────────────────────────────────────


def _search(session, q: str, newsletter: str, status: str, page_number: int) -> dict:
    newsletter_id = lists.get_newsletter(session, newsletter).id if newsletter else None
    found = consent.search(session, q, newsletter_id, status or None, page_number)
    rows = [dict(id=s.id, email=s.email, name=s.name, status=s.status, created_at=s.created_at,
                 newsletters=found.newsletters[s.id]) for s in found.subscribers]
    return dict(q=q, newsletter=newsletter, status=status, subscribers=rows, total=found.total,
                by_status=found.by_status, page=found.page, pages=found.pages)


def _newsletters(session) -> list[dict]:
    return [dict(id=n.id, slug=n.slug, name=n.name, status=n.status)
            for n in stored.all_newsletters(session)]


@pages.get("/subscribers", response_class=HTMLResponse)
def subscribers_page(request: Request, svc: Svc, q: str = "", newsletter: str = "", status: str = "",
                     page_number: int = Query(1, alias="page"), name: str = Depends(editor)):
    return _subscribers_page(request, svc, name, q, newsletter, status, page_number)


def _subscribers_page(request: Request, svc: Services, name: str, q: str = "", newsletter: str = "",
                      status: str = "", page_number: int = 1, answer: int = 200, adding: dict | None = None,
                      add_error: str | None = None) -> HTMLResponse:
    with transaction(svc.Session) as session:
        found = _search(session, q, newsletter, status, page_number)
        newsletters = _newsletters(session)
    found["chosen"] = found.pop("status")  # page() takes `status` for the answer's own
    adding = adding or dict(email="", name="", newsletters=[n["slug"] for n in newsletters
                                                          if n["status"] != "archived"][:1], vouched=False)
    return page("subscribers", request, answer, editor=name, newsletters=newsletters, statuses=consent.STATUSES,
                adding=adding, add_error=add_error, **found)


def _add(svc: Services, email: str, reader: str, slugs: list[str], vouched: bool, editor_name: str) -> dict:
    """One subscriber added by an editor, as `syndicate subscriber add` does: double opt-in (a confirmation
    mail) unless the editor vouches for the reader's consent. Queued after the commit, the mail's task finds
    its row."""
    from syndicate.tasks import hand_over, send_confirmation

    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in dict.fromkeys(slugs) if slug]
        signup = consent.subscribe(session, email, ids, name=reader.strip() or None, confirmed=vouched,
                                   source=f"desk ({editor_name})"[:30], settings=svc.settings)
        added = dict(id=signup.subscriber.id, email=signup.subscriber.email, status=signup.subscriber.status,
                     confirmation_mail=signup.send_confirmation, held_back=signup.held_back)
    if added["confirmation_mail"]:
        hand_over(send_confirmation, added["id"])
    return added


@pages.post("/subscribers", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def add_subscriber(request: Request, svc: Svc, email: str = Form(""), reader: str = Form("", alias="name"),
                   newsletter: list[str] = Form(default=[]), vouched: str = Form(""), name: str = Depends(editor)):
    try:
        added = _add(svc, email, reader, newsletter, ticked(vouched), name)
    except (InvalidInput, NotFound) as e:  # the page again, with what was typed and why
        typed = dict(email=email, name=reader, newsletters=newsletter, vouched=ticked(vouched))
        return _subscribers_page(request, svc, name, answer=400, adding=typed, add_error=str(e))
    return back(f"/desk/subscribers/{added['id']}")


def _subscriber(session, subscriber_id: int) -> dict:
    found = consent.by_id(session, subscriber_id)
    mine = timeline.subscriptions(session, found.id)
    return dict(id=found.id, email=found.email, name=found.name, status=found.status, since=found.created_at,
                confirmed_at=found.confirmed_at, subscriptions=mine,
                timeline=[entry.as_dict() for entry in timeline.timeline(session, found.id)],
                may_leave=found.status not in consent.SUPPRESSED or any(
                    s["status"] != "unsubscribed" for s in mine),
                may_restore=found.status in consent.SUPPRESSED)


@pages.get("/subscribers/export.csv")
def export_page(svc: Svc, newsletter: str = "", name: str = Depends(editor)):
    return _export(svc, newsletter)


def _act(session, subscriber_id: int, action: str, reason: str, name: str) -> dict:
    subscriber = consent.by_id(session, subscriber_id)
    if action == "leave":
        preferences.leave_all(session, subscriber.id, source="desk",
                              detail=f"taken off every newsletter by {name} on the desk")
    elif action == "restore":
        consent.restore(session, subscriber, reason, source=f"desk ({name})")
    else:
        raise InvalidInput(f"no subscriber action {action!r}: leave or restore")
    return _subscriber(session, subscriber.id)


# ── import ───────────────────────────────────────────────────────────────────


def _import_form(request: Request, svc: Services, name: str, error: str | None = None,
                 status: int = 200) -> HTMLResponse:
    with transaction(svc.Session) as session:
        newsletters = _newsletters(session)
        recent = [_progress(job) for job in session.scalars(
            select(SubscriberImport).order_by(SubscriberImport.id.desc()).limit(10))]
    return page("import", request, status, editor=name, newsletters=newsletters, recent=recent, error=error,
                limit_mb=uploads.UPLOAD_LIMIT // 1024 // 1024)


@pages.get("/subscribers/import", response_class=HTMLResponse)
def import_page(request: Request, svc: Svc, name: str = Depends(editor)):
    return _import_form(request, svc, name)


def _refused_size(request: Request) -> tuple[int, str] | None:
    """The status and why, if the upload is refused on its declared size before a byte of it is read.
    (The server reads no more of a body than its Content-Length says.)"""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return 411, "send the file with a Content-Length header; nothing was imported"
    if int(declared) > BODY_LIMIT:
        return 413, (f"the file is over the {uploads.UPLOAD_LIMIT // 1024 // 1024} MB an upload may be: "
                     "split it and upload the parts; nothing was imported")
    return None


def _start(svc: Services, name: str, filename: str, data: str | bytes, slugs: list[str], confirmed: bool,
           force: bool) -> int:
    """Keep the upload as an import and hand it to a worker; its id."""
    from syndicate.tasks import hand_over, import_subscribers

    with transaction(svc.Session) as session:
        newsletter_ids = [lists.get_newsletter(session, slug).id for slug in dict.fromkeys(slugs) if slug]
        job = uploads.start_import(session, name, filename, data, newsletter_ids, confirmed=confirmed,
                                   force=force)
        import_id = job.id
    hand_over(import_subscribers, import_id)  # after the commit; the broker away: the tick hands it out
    return import_id


# Not `Form` and `File` parameters: FastAPI would read the whole body before any check. This reads the
# declared size first, then the form (and the CSRF token in it).
@pages.post("/subscribers/import", response_class=HTMLResponse)
async def import_upload(request: Request, svc: Svc, name: str = Depends(editor)):
    if refused := _refused_size(request):
        return await run_in_threadpool(_import_form, request, svc, name, refused[1], refused[0])
    await csrf_checked(request)
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await run_in_threadpool(_import_form, request, svc, name, "choose a CSV file to upload", 400)
    try:
        import_id = await run_in_threadpool(_start, svc, name, upload.filename, await upload.read(),
                                            [str(s) for s in form.getlist("newsletter")], _ticked(form, "confirmed"),
                                            _ticked(form, "force"))
    except (InvalidInput, NotFound) as e:
        return await run_in_threadpool(_import_form, request, svc, name, str(e), 400)
    return back(f"/desk/subscribers/imports/{import_id}")


def _ticked(form, field: str) -> bool:
    return str(form.get(field, "")).lower() in ("1", "on", "true", "yes")


def _progress(job: SubscriberImport) -> dict:
    return dict(id=job.id, filename=job.filename, editor=job.editor, status=job.status, total=job.total,
                done=job.done, confirmed=job.confirmed, force=job.force, error=job.error,
                created_at=job.created_at, finished_at=job.finished_at,
                report=job.report if job.status == "done" else None)


def _import(session, import_id: int) -> SubscriberImport:
    return db.row(session, SubscriberImport, import_id, f"no subscriber import {import_id}")


@pages.get("/subscribers/imports/{import_id:int}", response_class=HTMLResponse)
def import_progress_page(request: Request, import_id: RowId, svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        row = _import(session, import_id)
        names = dict(session.execute(select(Newsletter.id, Newsletter.name)).all())
        job, into = _progress(row), [names.get(i, f"#{i}") for i in row.newsletter_ids]
    problems = uploads.report_from_dict(job["report"]).problems if job["report"] else []
    return page("subscriber_import", request, editor=name, job=job, into=into, problems=problems[:PROBLEMS_SHOWN],
                more=max(0, len(problems) - PROBLEMS_SHOWN))


@pages.get("/subscribers/imports/{import_id:int}/progress")
def import_progress(import_id: RowId, svc: Svc, name: str = Depends(editor)) -> dict:
    """For the page's progress bar (fetched with Accept: application/json: signed out, it gets a 401)."""
    with transaction(svc.Session) as session:
        job = _progress(_import(session, import_id))
    job.pop("report")  # the page shows the report itself, once done
    return job


@pages.get("/subscribers/imports/{import_id:int}/report.csv")
def import_report_page(import_id: RowId, svc: Svc, name: str = Depends(editor)):
    return _report_csv(svc, import_id)


def _report_csv(svc: Services, import_id: int) -> Response:
    with transaction(svc.Session) as session:
        job = _import(session, import_id)
        if job.status != "done":
            raise NotFound(f"import {import_id} has no report yet: it is {job.status} ({job.done} of {job.total} rows)")
        report = uploads.report_from_dict(job.report)
    out = io.StringIO(newline="")
    report.write_problems_csv(out)
    # With a byte order mark, so that a spreadsheet reads accents in addresses and names right.
    return Response(out.getvalue().encode("utf-8-sig"), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="import-{import_id}-rows-not-imported.csv"',
        "Cache-Control": "no-store"})


# ── export ───────────────────────────────────────────────────────────────────


def _export(svc: Services, newsletter: str) -> StreamingResponse:
    """Built, then sent. export_csv writes the whole list in one call inside one transaction: spooled to a
    temporary file (in memory up to 1 MB, then on disk), memory stays flat however long the list, and the
    transaction ends before the download does, however slowly the editor's connection takes it."""
    out = tempfile.SpooledTemporaryFile(max_size=1024 * 1024, mode="w+", encoding="utf-8", newline="")
    try:
        with transaction(svc.Session) as session:
            newsletter_id = lists.get_newsletter(session, newsletter).id if newsletter else None
            csv_files.export_csv(session, out, newsletter_id)
    except BaseException:
        out.close()
        raise
    out.seek(0)

    def blocks() -> Iterator[bytes]:
        with out:
            yield "\ufeff".encode()  # a byte order mark: a spreadsheet then reads accents right
            while block := out.read(64 * 1024):
                yield block.encode()

    filename = f"subscribers-{newsletter or 'all'}-{utcnow():%Y-%m-%d}.csv"
    return StreamingResponse(blocks(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


# ── one subscriber (after the fixed paths above, which its id would otherwise shadow) ─


@pages.get("/subscribers/{subscriber_id:int}", response_class=HTMLResponse)
def subscriber_page(request: Request, subscriber_id: RowId, svc: Svc, name: str = Depends(editor)):
    return _subscriber_view(request, svc, subscriber_id, name)


def _subscriber_view(request: Request, svc: Services, subscriber_id: int, name: str, error: str | None = None,
                     status: int = 200) -> HTMLResponse:
    with transaction(svc.Session) as session:
        record = _subscriber(session, subscriber_id)
    return page("subscriber", request, status, editor=name, subscriber=record, error=error)


# ── a reader's rights: their data as JSON, and erasure (before the action route, whose {action} would take them)


def _data(svc: Services, subscriber_id: int) -> Response:
    with transaction(svc.Session) as session:
        data = rights.export(session, consent.by_id(session, subscriber_id))
    return Response(json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}-data.json"',
        "Cache-Control": "no-store"})


@pages.get("/subscribers/{subscriber_id:int}/data.json")
def data_page(subscriber_id: RowId, svc: Svc, name: str = Depends(editor)):
    return _data(svc, subscriber_id)


@pages.get("/subscribers/{subscriber_id:int}/erase", response_class=HTMLResponse)
def erase_page(request: Request, subscriber_id: RowId, svc: Svc, name: str = Depends(editor)):
    """What erasing the person's data does, and the button that does it."""
    with transaction(svc.Session) as session:
        plan = rights.erase_plan(session, consent.by_id(session, subscriber_id))
    return confirmation(request, name, "Erase", plan, f"/desk/subscribers/{subscriber_id}/erase",
                        f"/desk/subscribers/{subscriber_id}")


def _erase(svc: Services, subscriber_id: int, editor_name: str) -> dict:
    with transaction(svc.Session) as session:
        done = rights.erase(session, consent.by_id(session, subscriber_id), editor_name)
    return dict(id=subscriber_id, done="erased", consequences=done.summary())


@pages.post("/subscribers/{subscriber_id:int}/erase", response_class=HTMLResponse,
            dependencies=[Depends(csrf_checked)])
def erase_subscriber(request: Request, subscriber_id: RowId, svc: Svc, name: str = Depends(editor)):
    _erase(svc, subscriber_id, name)
    return back("/desk/removals")


@pages.post("/subscribers/{subscriber_id:int}/{action}", response_class=HTMLResponse,
            dependencies=[Depends(csrf_checked)])
def subscriber_action(request: Request, subscriber_id: RowId, action: str, svc: Svc, reason: str = Form(""),
                      name: str = Depends(editor)):
    try:
        with transaction(svc.Session) as session:
            _act(session, subscriber_id, action, reason, name)
    except InvalidInput as e:
        return _subscriber_view(request, svc, subscriber_id, name, str(e), 400)
    return back(f"/desk/subscribers/{subscriber_id}")


# ── the same, for scripts ────────────────────────────────────────────────────


class NewSubscriber(BaseModel):
    email: str
    name: str = ""
    newsletters: list[str]  # slugs
    # You vouch for the reader's consent: no confirmation mail. Otherwise (the default) they confirm by mail.
    confirmed: bool = False


class Restore(BaseModel):
    reason: str  # why mail may go to the address again: it goes on the subscriber's timeline


class CsvImport(BaseModel):
    csv: str  # the file's text: a header row with an email column, then one row per address
    filename: str = "import.csv"
    newsletters: list[str] = []  # slugs; a row's own newsletters cell replaces them for that row
    confirmed: bool = False  # you vouch for their consent; otherwise each new address gets a confirmation mail
    force: bool = False  # also add back people who unsubscribed, bounced or complained (renewed consent)


UPLOAD_FORM = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary", "description": "the CSV file, UTF-8"},
    "newsletter": {"type": "array", "items": {"type": "string"}, "description": "newsletter slugs"},
    "confirmed": {"type": "boolean", "default": False}, "force": {"type": "boolean", "default": False}}}


@api.get("/subscribers", tags=["subscribers"])
def subscribers_json(svc: Svc, q: str = "", newsletter: str = "", status: str = "", page: int = 1,
                     name: str = Depends(api_editor)) -> dict:
    """Subscribers whose address or name holds `q` (any case; the start of an address, with its @, is found
    by index), getting `newsletter` (a slug), with `status`; 50 a page, by address, with counts per status."""
    with transaction(svc.Session) as session:
        return _search(session, q, newsletter, status, page)


@api.post("/subscribers", tags=["subscribers"], status_code=201)
def add_json(body: NewSubscriber, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Add one subscriber to `newsletters`, as `syndicate subscriber add` does: a confirmation mail goes out
    (`confirmation_mail`) unless `confirmed`, your word that they consented."""
    return _add(svc, body.email, body.name, body.newsletters, body.confirmed, name)


@api.get("/subscribers/export.csv", tags=["subscribers"], response_class=StreamingResponse,
         responses={200: {"content": {"text/csv": {}}}})
def export_json(svc: Svc, newsletter: str = "", name: str = Depends(api_editor)):
    """Every subscriber (or those getting `newsletter`, or waiting to confirm it) as CSV:
    email,name,status,newsletters,created_at,confirmed_at. The file imports back unchanged."""
    return _export(svc, newsletter)


@api.post("/subscribers/imports", tags=["subscribers"], status_code=202,
          openapi_extra={"requestBody": {"required": True, "content": {
              "multipart/form-data": {"schema": UPLOAD_FORM},
              "application/json": {"schema": CsvImport.model_json_schema()}}}})
async def import_json(request: Request, svc: Svc, name: str = Depends(api_editor)):
    """Import subscribers from a CSV file: uploaded (multipart, the field `file`) or as text in JSON. A worker
    imports it; GET the import for its progress, then its report. A file that can't be imported at all
    (over 20 MB, not CSV in UTF-8, no email column, no newsletter) is refused at once, and nothing is kept."""
    if refused := _refused_size(request):
        return JSONResponse({"error": refused[1]}, refused[0])
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = CsvImport.model_validate_json(await request.body())
        except ValidationError as e:
            return JSONResponse({"error": str(e)}, 422)
        upload = (body.filename, body.csv, body.newsletters, body.confirmed, body.force)
    else:
        form = await request.form()
        file = form.get("file")
        if not isinstance(file, UploadFile):
            return JSONResponse({"error": "send the CSV file as the multipart field `file`, or JSON with `csv`"}, 422)
        upload = (file.filename or "upload.csv", await file.read(), [str(s) for s in form.getlist("newsletter")],
                  _ticked(form, "confirmed"), _ticked(form, "force"))
    import_id = await run_in_threadpool(_start, svc, name, *upload)
    return await run_in_threadpool(_import_json, svc, import_id)


def _import_json(svc: Services, import_id: int) -> dict:
    with transaction(svc.Session) as session:
        return _progress(_import(session, import_id))


@api.get("/subscribers/imports/{import_id:int}", tags=["subscribers"])
def import_progress_json(import_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """An import's progress (`done` of `total` rows of the file; status queued, running, done or failed, with
    `error`), and once done its report: counts, and every row not imported with its line and why."""
    return _import_json(svc, import_id)


@api.get("/subscribers/imports/{import_id:int}/report.csv", tags=["subscribers"], response_class=Response,
         responses={200: {"content": {"text/csv": {}}}})
def import_report_json(import_id: RowId, svc: Svc, name: str = Depends(api_editor)):
    """The rows a finished import left out, as CSV: line,email,reason."""
    return _report_csv(svc, import_id)


@api.get("/subscribers/{subscriber_id:int}", tags=["subscribers"])
def subscriber_json(subscriber_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """One subscriber: status, subscriptions, and the timeline — every edition delivered, skipped (why) or
    failed (the server's reply), bounces, complaints, and what they and the editors did."""
    with transaction(svc.Session) as session:
        return _subscriber(session, subscriber_id)


@api.post("/subscribers/{subscriber_id:int}/leave", tags=["subscribers"])
def leave_json(subscriber_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Stop every newsletter to this address: suppressed as unsubscribed, so no import adds it back unforced."""
    with transaction(svc.Session) as session:
        return _act(session, subscriber_id, "leave", "", name)


@api.get("/subscribers/{subscriber_id:int}/data", tags=["subscribers"])
def data_json(subscriber_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Everything held about the subscriber (GDPR Art. 15 and 20), in the format syndicate-personal-data/1."""
    with transaction(svc.Session) as session:
        return rights.export(session, consent.by_id(session, subscriber_id))


@api.post("/subscribers/{subscriber_id:int}/erase", tags=["subscribers"])
def erase_json(subscriber_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Erase everything held about the subscriber at their request (GDPR Art. 17): deleted for good; their
    deliveries stay in the editions' figures naming nobody, and a keyed hash keeps imports from adding them back."""
    return _erase(svc, subscriber_id, name)


@api.post("/subscribers/{subscriber_id:int}/restore", tags=["subscribers"])
def restore_json(subscriber_id: RowId, body: Restore, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Let mail go again to an address that bounced, complained or left everything — only with the reader's
    say-so. The newsletters they left stay left."""
    with transaction(svc.Session) as session:
        return _act(session, subscriber_id, "restore", body.reason, name)
