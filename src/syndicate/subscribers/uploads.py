"""A CSV list uploaded on the desk (or through the API), imported by a worker in chunks: each chunk in a
transaction of its own, the job's progress and report kept on its row, a lost job picked up again."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from syndicate import db
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.errors import InvalidInput, SyndicateError
from syndicate.ledger import ImportStatus
from syndicate.models import SubscriberImport, utcnow
from syndicate.subscribers import csv_files

UPLOAD_LIMIT = 20 * 1024 * 1024  # bytes, about 200,000 rows: a longer list goes in parts, or by the CLI
# The report's hints name the CLI's options; an upload's reader chose with the desk's form (or its API).
DESK_WORDS = {
    "(use --force to add back)": "(choose “add back people who left”, force, to import them)",
    "(import it with --double-opt-in to ask them to confirm)":
        "(import it without “these people consented”, confirmed, to ask them to confirm)",
    "or give --newsletter": "or choose newsletters for the whole file",
    " (--newsletter SLUG)": "",
}


def start_import(session: Session, editor: str, filename: str, data: str | bytes, newsletter_ids: list[int], *,
                 confirmed: bool, force: bool, now: datetime | None = None) -> SubscriberImport:
    """Keep an uploaded file for a worker to import (run_import), queued, after the checks import_csv makes
    before it writes anything: a file that can't be imported at all — too big, not CSV in UTF-8, no email
    column, no newsletter chosen — is refused here, saying what to do, and nothing is stored.
    `confirmed` and `force` are import_csv's."""
    if len(data) > UPLOAD_LIMIT:
        raise InvalidInput(f"the file is {len(data) / 1024 / 1024:.1f} MB, over the {UPLOAD_LIMIT // 1024 // 1024} MB "
                           "an upload may be: split it and upload the parts; nothing was imported")
    if isinstance(data, bytes) and data.startswith(b"PK\x03\x04"):  # a zip: .xlsx and .ods are
        raise InvalidInput("this is a spreadsheet workbook, not CSV: in the spreadsheet choose Save As → "
                           "CSV UTF-8, then upload that file; nothing was imported")
    text = csv_files.decode(data)
    header, records = csv_files.read_table(text)
    _newsletters_checked(session, csv_files.header_columns(header), newsletter_ids)
    if not records:
        raise InvalidInput("the file has a header row and no addresses under it; nothing was imported")
    job = SubscriberImport(editor=editor, filename=(filename.strip() or "upload.csv")[-255:], data=text,
                           newsletter_ids=list(newsletter_ids), confirmed=confirmed, force=force,
                           status=ImportStatus.QUEUED, total=len(records), done=0, created_at=now or utcnow())
    session.add(job)
    session.flush()
    return job


def _newsletters_checked(session: Session, columns: dict[str, int], newsletter_ids: list[int]) -> dict[str, int]:
    try:
        return csv_files.newsletters_checked(session, columns, newsletter_ids)
    except InvalidInput as e:
        raise InvalidInput(_in_desk_words_text(str(e))) from e


def run_import(sessions: sessionmaker, import_id: int, now: datetime | None = None, *, chunk: int = csv_files.CHUNK,
               confirm: Callable[[list[int]], object] | None = None) -> SubscriberImport:
    """Import a stored upload (start_import), `chunk` addresses per transaction. Each transaction also moves
    `done` on (rows of the file) and keeps the report so far: another request sees the progress as it goes.
    `confirm` gets each chunk's addresses waiting for a confirmation mail, once that chunk is committed.

    Safe to run again after a worker died mid-way (the task is delivered again): it goes on from `done`.
    A chunk's subscribers, `done` and the report so far commit together, so no row is applied twice and
    the report comes out as one uninterrupted run's. Two runs at once take turns on the import's row lock,
    each chunk starting from `done` as the other left it. A finished or failed import is left as it is."""
    now = now or utcnow()
    with transaction(sessions) as session:
        # queued → running; a run after a worker died finds it running and goes on
        session.execute(update(SubscriberImport).where(SubscriberImport.id == import_id,
                                                       SubscriberImport.status == ImportStatus.QUEUED)
                        .values(status=ImportStatus.RUNNING))
        job = db.row(session, SubscriberImport, import_id, f"no subscriber import {import_id}")
        if job.status != ImportStatus.RUNNING:
            return job
    try:
        with transaction(sessions) as session:
            job = session.get(SubscriberImport, import_id)
            header, records = csv_files.read_table(job.data or "")
            slugs = _newsletters_checked(session, csv_files.header_columns(header), job.newsletter_ids)
            parsed = csv_files.ImportReport()  # the rows refused for what they say: the same on every run
            columns = csv_files.header_columns(header)
            offered = csv_files.Offered(session, [*slugs.values(), *job.newsletter_ids])
            rows = list(csv_files.fit_rows(records, columns, slugs, job.newsletter_ids, parsed, offered=offered))
        names = {newsletter_id: slug for slug, newsletter_id in slugs.items() if newsletter_id}
        # `done` counts the file's rows: the one each fit row is, counted from 1.
        row_number = {line: n for n, (line, _) in enumerate(records, start=1)}
        ends = [row_number[row.line] for row in rows]
        while True:
            with transaction(sessions) as session:
                job = session.scalar(select(SubscriberImport).where(SubscriberImport.id == import_id)
                                     .with_for_update())
                if job.status != ImportStatus.RUNNING:
                    return job
                start = bisect.bisect_right(ends, job.done)
                batch = rows[start:start + chunk]
                step = csv_files.ImportReport()
                if batch:
                    csv_files.import_chunk(session, batch, names, step, force=job.force, confirmed=job.confirmed,
                                           now=now)
                report = _added_up(report_from_dict(job.report) if job.report else csv_files.ImportReport(), step)
                if start + chunk >= len(rows):
                    report.bad, report.duplicates = _in_desk_words(parsed.bad), parsed.duplicates
                    job.status, job.done, job.data, job.finished_at = ImportStatus.DONE, job.total, None, utcnow()
                else:
                    job.done = ends[start + chunk - 1]
                job.report, job.progressed_at = report.as_dict(), utcnow()
            if confirm is not None and step.to_confirm:
                # After the commit, so the task finds the rows. A worker dying right here loses these
                # mails: the readers stay waiting, and a signup on the site sends them one.
                confirm(step.to_confirm)
            if job.status == ImportStatus.DONE:
                return job
    except SyndicateError as e:
        return _failed(sessions, import_id, str(e))
    except OperationalError:
        raise  # the database, not the file: the task runs again and goes on from `done`
    except Exception:
        _failed(sessions, import_id, None)
        raise  # a bug: logged by the worker, never retried


def lost_imports(session: Session, settings: Settings, now: datetime) -> list[int]:
    """Imports queued or running that have not moved on for settings.leases.requeue: their task was lost (a
    broker restart, a worker killed with the task unacknowledged for an hour). Stamped now, for the caller
    to hand out again after commit; run_import goes on from `done`. A chunk takes seconds, so a live
    import is never taken for lost; if it were, the two runs would take turns on its row lock."""
    stalled = and_(SubscriberImport.status.in_((ImportStatus.QUEUED, ImportStatus.RUNNING)),
                   func.coalesce(SubscriberImport.progressed_at, SubscriberImport.created_at)
                   <= now - settings.leases.requeue)
    ids = list(session.scalars(select(SubscriberImport.id).where(stalled)))
    if ids:
        session.execute(update(SubscriberImport).where(SubscriberImport.id.in_(ids), stalled)
                        .values(progressed_at=now).execution_options(synchronize_session=False))
    return ids


def _added_up(report: csv_files.ImportReport, step: csv_files.ImportReport) -> csv_files.ImportReport:
    report.added += step.added
    report.updated += step.updated
    report.unchanged += step.unchanged
    report.resubscribed += step.resubscribed
    report.skipped += _in_desk_words(step.skipped)
    report.to_confirm += step.to_confirm
    return report


def _in_desk_words(problems: list[csv_files.Problem]) -> list[csv_files.Problem]:
    return [(line, value, _in_desk_words_text(reason)) for line, value, reason in problems]


def _in_desk_words_text(text: str) -> str:
    for cli, desk in DESK_WORDS.items():
        text = text.replace(cli, desk)
    return text


def _failed(sessions: sessionmaker, import_id: int, error: str | None) -> SubscriberImport | None:
    """Mark the import failed with `error` (None: a bug, which the editor can't fix), so its page stops
    waiting and says why."""
    with transaction(sessions) as session:
        job = session.get(SubscriberImport, import_id)
        if job is not None and job.status in (ImportStatus.QUEUED, ImportStatus.RUNNING):
            job.error = error or (f"the import stopped on an error (the worker's log has it) after {job.done:,} of "
                                  f"{job.total:,} rows, which are in: upload the file again to import the rest; "
                                  "what is in stays as it is")
            job.status, job.finished_at = ImportStatus.FAILED, utcnow()
        return job


def report_from_dict(found: dict) -> csv_files.ImportReport:
    """An csv_files.ImportReport again, from its as_dict() (as an import keeps it)."""
    problems = {key: [(p["line"], p["email"], p["reason"]) for p in found.get(key, [])]
                for key in ("skipped", "bad", "duplicates")}
    return csv_files.ImportReport(added=found.get("added", 0), updated=found.get("updated", 0),
                                  unchanged=found.get("unchanged", 0), resubscribed=found.get("resubscribed", 0),
                                  to_confirm=list(found.get("to_confirm", [])), **problems)
