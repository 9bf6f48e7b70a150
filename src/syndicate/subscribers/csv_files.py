"""Subscribers in and out as CSV: an editor's list from a spreadsheet or another tool, and back.

An import checks the whole file before it writes anything, reports every row it refuses with its
line in the file (the good rows go in anyway), never adds back an address that unsubscribed,
bounced or complained unless the editor forces it (nor, even forced, one erased at its owner's request),
and changes nothing when the same file comes twice.

A file from disk (import_file, the CLI's) is read as a stream, twice: a first pass checks that it is
UTF-8 CSV with an email column and counts its rows, a second imports it BATCH rows per transaction. No
list of its rows is ever built and the addresses met so far wait in a SQLite file of their own, so a
million rows take the memory of a few batches (bench/import_memory.py measures it).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import shutil
import sqlite3
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import BinaryIO, TextIO

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.models import Newsletter, Subscriber, SubscriberEvent, Subscription, utcnow
from syndicate.subscribers import choices, consent, rights, zones

CHUNK = 500  # addresses per IN (…) query: one round trip per 500 rows, well under any parameter limit
BATCH = 5000  # rows of a file per transaction in import_file: a lock held ~1 s, then other writers go
DELIMITERS = (",", ";", "\t")  # Excel writes ";" where the decimal separator is a comma
COLUMNS = {  # header cell (case-folded, spaces collapsed) → what it holds
    "email": "email", "e-mail": "email", "email address": "email", "e-mail address": "email",
    "name": "name",
    "newsletters": "newsletters", "newsletter": "newsletters",
    "status": "status",
    "timezone": "timezone", "time zone": "timezone",  # a new reader's own (subscribers.zones)
    "topics": "topics", "topic": "topics",
    "frequency": "frequency",
}
# Topics in one cell: "|" between them. Not ";" or ",": either may be the file's own delimiter (Excel
# writes ";"), and not spaces: a topic may have them ("Local news"). "*": every story again.
TOPIC_SEPARATOR = "|"
EVERY_TOPIC = "*"
STATUSES = ("pending", "confirmed", *consent.SUPPRESSED)
EXPORT_COLUMNS = ["email", "name", "status", "newsletters", "created_at", "confirmed_at", "topics", "frequency",
                  "timezone"]
FORCE_HINT = "skipped (use --force to add back)"
# A cell starting with one of these is a formula to a spreadsheet: names come from a public signup form.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Problem = tuple[int, str, str]  # line in the file, the address (or the raw cell), why


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    resubscribed: int = 0
    skipped: list[Problem] = field(default_factory=list)  # refused on purpose: they left, bounced, complained
    bad: list[Problem] = field(default_factory=list)  # not an address, unknown newsletter
    duplicates: list[Problem] = field(default_factory=list)  # the same address earlier in the file
    to_confirm: list[int] = field(default_factory=list)  # subscriber ids a confirmation mail should go to

    @property
    def problems(self) -> list[Problem]:
        """Every row not imported as it stood, in file order."""
        return sorted(self.bad + self.skipped + self.duplicates)

    def write_problems_csv(self, out: TextIO) -> int:
        writer = csv.writer(out)
        writer.writerow(["line", "email", "reason"])
        for line, value, reason in self.problems:
            writer.writerow([line, _defused(value), reason])
        return len(self.problems)

    def as_dict(self) -> dict:
        found = asdict(self)
        for key in ("skipped", "bad", "duplicates"):
            found[key] = [dict(line=line, email=value, reason=reason) for line, value, reason in found[key]]
        return found


@dataclass
class Row:
    line: int
    email: str
    name: str | None
    newsletter_ids: list[int]
    file_status: str | None  # the file's own status column, if it has one (e.g. our export)
    timezone: str | None = None  # its timezone cell: kept for a new reader only, as at sign-up
    # The reader's choices for the row's newsletters (subscribers.choices); None: as they are (new: every
    # topic, each edition). topics: by newsletter id, None there meaning every story.
    topics: dict[int, list[str] | None] | None = None
    frequency: str | None = None


# ── import ───────────────────────────────────────────────────────────────────


def import_csv(session: Session, data: str | bytes, newsletter_ids: list[int], *, force: bool = False,
               confirmed: bool = True, now: datetime | None = None) -> ImportReport:
    """Subscribe the addresses in a CSV file to `newsletter_ids` (a row's newsletters cell replaces them).

    `confirmed`: the editor vouches for consent, so new addresses are confirmed at once; without it
    they wait for the reader's confirmation (ids in `to_confirm`, to mail after the commit).
    `force`: add back addresses that unsubscribed, bounced or complained (renewed consent).
    All in the caller's transaction; a file too long to hold goes through import_file."""
    now = now or utcnow()
    header, records = read_table(decode(data))
    columns = header_columns(header)
    slugs = newsletters_checked(session, columns, newsletter_ids)
    report = ImportReport()
    offered = Offered(session, [*slugs.values(), *newsletter_ids])
    rows = fit_rows(records, columns, slugs, newsletter_ids, report, offered=offered)
    names = {newsletter_id: slug for slug, newsletter_id in slugs.items() if newsletter_id is not None}
    while chunk := list(itertools.islice(rows, CHUNK)):
        import_chunk(session, chunk, names, report, force=force, confirmed=confirmed, now=now)
    session.flush()
    return report


def import_file(sessions: sessionmaker, stream: BinaryIO, newsletter_ids: list[int], *, force: bool = False,
                confirmed: bool = True, now: datetime | None = None, batch: int = BATCH,
                progress: Callable[[int, int], object] | None = None,
                confirm: Callable[[list[int]], object] | None = None) -> ImportReport:
    """import_csv for a file of any length, in the memory of a few batches. The file is first read through
    once: not UTF-8 CSV, no email column, a newsletter that doesn't exist — refused then, saying where, and
    nothing is written. Then it is read again and imported `batch` rows per transaction, each committed
    before the next batch is read, so sign-ups and deliveries don't wait for a million rows.

    `progress(done, total)` after each batch, in rows of the file (the first pass counted them).
    `confirm(ids)`: each batch's addresses waiting for a confirmation mail, once that batch is committed.
    A run stopped half-way (a crash, Ctrl-C) leaves the batches before it in: the same file imported again
    changes nothing of those and imports the rest. A stream that can't seek (standard input) is copied to
    a temporary file first, to be read twice."""
    now = now or utcnow()
    with _rewindable(stream) as stream:
        start = stream.tell()
        header, records = open_table(text_lines(stream))
        total = sum(1 for _ in records)
        columns = header_columns(header)
        with transaction(sessions) as session:
            slugs = newsletters_checked(session, columns, newsletter_ids)
            offered = Offered(session, [*slugs.values(), *newsletter_ids])
        names = {newsletter_id: slug for slug, newsletter_id in slugs.items() if newsletter_id is not None}
        stream.seek(start)
        report, done = ImportReport(), 0

        def counted(records: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
            nonlocal done
            for record in records:
                done += 1
                yield record

        with tempfile.TemporaryDirectory(prefix="syndicate-import-") as folder:
            seen = SeenOnDisk(folder)
            try:
                rows = fit_rows(counted(open_table(text_lines(stream))[1]), columns, slugs, newsletter_ids, report,
                                seen, offered=offered)
                while chunk := list(itertools.islice(rows, batch)):
                    asked = len(report.to_confirm)
                    with transaction(sessions) as session:
                        for i in range(0, len(chunk), CHUNK):
                            import_chunk(session, chunk[i:i + CHUNK], names, report, force=force,
                                         confirmed=confirmed, now=now)
                    if confirm is not None and len(report.to_confirm) > asked:
                        confirm(report.to_confirm[asked:])  # after the commit, so the task finds the rows
                    if progress is not None:
                        progress(done, total)
            finally:
                seen.close()
    if progress is not None:
        progress(total, total)  # rows after the last good one were all refused: the bar ends full
    return report


@contextmanager
def _rewindable(stream: BinaryIO) -> Iterator[BinaryIO]:
    """`stream`, or a copy on disk of what it gives when it can't seek back for the second pass."""
    if stream.seekable():
        yield stream
        return
    with tempfile.TemporaryFile(prefix="syndicate-import-") as copy:
        shutil.copyfileobj(stream, copy, 1024 * 1024)
        copy.seek(0)
        yield copy


class SeenOnDisk:
    """Each address met so far in a file and the line it was on, as fit_rows asks (get, and set): kept in a
    SQLite file in `folder`, where a dict of a million addresses takes ~160 MB (measured); SQLite's page
    cache holds 2 MB of it."""

    def __init__(self, folder: str):
        self.db = sqlite3.connect(os.path.join(folder, "seen.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")  # a scratch file, thrown away with its folder
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE seen (email TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        self.db.execute("BEGIN")  # never committed: nothing is synced to disk per row

    def get(self, email: str, default: int | None = None) -> int | None:
        found = self.db.execute("SELECT line FROM seen WHERE email = ?", (email,)).fetchone()
        return found[0] if found else default

    def __setitem__(self, email: str, line: int) -> None:
        self.db.execute("INSERT INTO seen (email, line) VALUES (?, ?)", (email, line))

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM seen").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def newsletters_checked(session: Session, columns: dict[str, int], newsletter_ids: list[int]
                        ) -> dict[str, int | None]:
    """Every newsletter's id by its slug, once the file is known to say where its people go: newsletters
    chosen for the whole file (which must exist) or a newsletters column."""
    everything = session.execute(select(Newsletter.slug, Newsletter.id, Newsletter.status)).all()
    if missing := set(newsletter_ids) - {n.id for n in everything}:
        raise InvalidInput(f"no newsletter with id {sorted(missing)}; nothing was imported")
    if archived := [n.slug for n in everything if n.id in newsletter_ids and n.status == "archived"]:
        raise InvalidInput(f"newsletter {', '.join(archived)} is archived: it takes no new readers; choose another "
                           "(or resume it first); nothing was imported")
    # An archived newsletter's slug maps to None: a row naming it is refused, saying why.
    slugs = {n.slug: None if n.status == "archived" else n.id for n in everything}
    if not newsletter_ids and "newsletters" not in columns:
        raise InvalidInput("choose the newsletters to subscribe them to (--newsletter SLUG), "
                           "or give the file a newsletters column; nothing was imported")
    return slugs


def decode(data: str | bytes) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(data[:e.start].count(b"\n") + 1, data[e.start]) from e


def _not_utf8(line: int, byte: int) -> InvalidInput:
    return InvalidInput(f"the file isn't UTF-8 (line {line} has byte 0x{byte:02x}): save it as "
                        "UTF-8 CSV (in Excel: Save As → 'CSV UTF-8') and import it again; "
                        "nothing was imported")


MAX_LINE = 1024 * 1024  # bytes: a row is a few hundred; a file with no line ends isn't read whole into memory
HEAD_LINES = 50  # lines the delimiter is guessed from: the header is among the first


def text_lines(stream: BinaryIO) -> Iterator[str]:
    """A UTF-8 file's lines as text, one at a time, as a file opened with newline="" gives them (\\r\\n,
    \\n or a lone \\r ends one); a byte that isn't UTF-8 refused with its line, as decode() does."""
    number = 0
    while raw := stream.readline(MAX_LINE + 1):
        if len(raw) > MAX_LINE:
            raise InvalidInput(f"line {number + 1} of the file is over {MAX_LINE // 1024 // 1024} MB long: is it CSV? "
                               "(a file whose lines end with a lone CR, as old Macs wrote: save it as 'CSV UTF-8'); "
                               "nothing was imported")
        if number == 0:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # the byte order mark Excel writes
        # A lone CR ends a line too; 0x0d is never part of a longer UTF-8 sequence, so the bytes split safely.
        for piece in _LONE_CR.split(raw) if b"\r" in raw[:-2] else (raw,):
            number += 1
            try:
                yield piece.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(number, piece[e.start]) from e


_LONE_CR = re.compile(rb"(?<=\r)(?!\n)(?=.)", re.DOTALL)


def read_table(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and every non-blank record with the physical line it starts on (quoted fields may span lines)."""
    header, records = open_table(io.StringIO(text, newline=""))
    return header, list(records)


def open_table(lines: Iterable[str]) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header, and the non-blank records after it as they are read, each with the physical line it
    starts on. `lines` as a file opened with newline="" gives them (text_lines, or a StringIO)."""
    lines = iter(lines)
    head = list(itertools.islice(lines, HEAD_LINES))
    reader = csv.reader(itertools.chain(head, lines), delimiter=_delimiter("".join(head)))
    records = _records(reader)
    first = next(records, None)
    if first is None:
        raise InvalidInput("the file is empty: it needs a header row with an email column, then one row per address")
    return first[1], records


def _records(reader) -> Iterator[tuple[int, list[str]]]:
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if any(cell.strip() for cell in record):
                yield start, record
    except csv.Error as e:
        raise InvalidInput(f"line {last + 1} of the file can't be read as CSV ({e}); nothing was imported") from e


def _delimiter(text: str) -> str:
    """The delimiter that makes the header row name an email column (the most columns wins a tie)."""
    headers = {}
    for delimiter in DELIMITERS:
        try:
            first = next((r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
                          if any(cell.strip() for cell in r)), [])
        except csv.Error:
            first = []
        headers[delimiter] = first
    with_email = [d for d in DELIMITERS if "email" in header_columns(headers[d], check=False)]
    return max(with_email or DELIMITERS, key=lambda d: len(headers[d]))


def header_columns(header: list[str], check: bool = True) -> dict[str, int]:
    found: dict[str, int] = {}
    for i, cell in enumerate(header):
        role = COLUMNS.get(" ".join(cell.replace("_", " ").casefold().split()))
        if role is not None:
            found.setdefault(role, i)
    if check and "email" not in found:
        listed = ", ".join(repr(cell) for cell in header)
        raise InvalidInput(f"the file has no email column (its columns: {listed}); name the column with the "
                           "addresses 'email' in the header row; nothing was imported")
    return found


class Offered:
    """Each newsletter's topics (choices.topics_of), read once per import, before its rows: a row's
    newsletters are among those the file names (checked first) or the import's own."""

    def __init__(self, session: Session, newsletter_ids: Iterable[int | None]):
        self.found: dict[int, tuple[Newsletter, list[str]]] = {}
        for newsletter_id in dict.fromkeys(i for i in newsletter_ids if i is not None):
            newsletter = session.get(Newsletter, newsletter_id)
            if newsletter is not None:
                self.found[newsletter_id] = newsletter, choices.topics_of(session, newsletter)

    def __call__(self, newsletter_id: int) -> tuple[Newsletter, list[str]]:
        return self.found[newsletter_id]


def _choices_of(topics_cell: str, frequency_cell: str, chosen: list[int], offered: Offered):
    """The row's topics (by newsletter) and frequency, or InvalidInput saying what is wrong."""
    frequency = choices.check_frequency(frequency_cell) if frequency_cell.strip() else None
    cell = _undefused(topics_cell.strip())
    if not cell:
        return None, frequency
    listed = [t.strip() for t in cell.split(TOPIC_SEPARATOR) if t.strip()]
    if listed == [EVERY_TOPIC]:
        return dict.fromkeys(chosen), frequency
    return {n: choices.check_topics(*offered(n), listed) for n in chosen}, frequency


def fit_rows(records: Iterable[tuple[int, list[str]]], columns: dict[str, int], slugs: dict[str, int | None],
             default_ids: list[int], report: ImportReport, seen: dict[str, int] | SeenOnDisk | None = None, *,
             offered: Offered | None = None) -> Iterator[Row]:
    """Rows fit to import, as the records come; bad ones and repeats go to the report. `seen`: the
    addresses met so far and their line (a dict unless given)."""
    seen = {} if seen is None else seen
    for line, record in records:
        fit = fit_row(line, record, columns, slugs, default_ids, offered)
        if not isinstance(fit, Row):
            report.bad.append(fit)
        elif (earlier := seen.get(fit.email)) is not None:
            report.duplicates.append((line, fit.email, f"duplicate of line {earlier}"))
        else:
            seen[fit.email] = line
            yield fit


def fit_row(line: int, record: list[str], columns: dict[str, int], slugs: dict[str, int | None],
            default_ids: list[int], offered: Offered | None = None) -> Row | Problem:
    """One record of the file as the Row to import, or the Problem that keeps it out: every cell of a row is
    read here, and a new column is read here too."""

    def cell(role: str) -> str:
        i = columns.get(role)
        return record[i] if i is not None and i < len(record) else ""

    raw = cell("email")
    value = _undefused(raw.strip())
    if not value:
        return line, raw, "no email address"
    try:
        email = consent.normalise_email(value)
    except InvalidInput as e:
        return line, raw, f"not an email address we can send to: {e.__cause__ or e}"
    chosen = default_ids
    if listed := [s for s in re.split(r"[;,\s]+", cell("newsletters").casefold()) if s]:
        if unknown := [s for s in listed if s not in slugs]:
            return line, raw, f"no newsletter {', '.join(map(repr, unknown))} (newsletters column)"
        if archived := [s for s in listed if slugs[s] is None]:
            return line, raw, (f"newsletter {', '.join(map(repr, archived))} is archived: it takes no new readers "
                               "(newsletters column)")
        chosen = list(dict.fromkeys(slugs[s] for s in listed))
    if not chosen:
        return line, raw, "no newsletter: fill its newsletters cell or give --newsletter"
    try:
        zone = zones.checked(_undefused(cell("timezone").strip()))
    except InvalidInput as e:
        return line, raw, f"{e} (timezone column)"
    topics, frequency = None, None
    if offered is not None and (cell("topics").strip() or cell("frequency").strip()):
        try:
            topics, frequency = _choices_of(cell("topics"), cell("frequency"), chosen, offered)
        except InvalidInput as e:
            column = "frequency" if "frequency" in str(e) else "topics"
            return line, raw, (f"{e} ({column} column; topics separated by '{TOPIC_SEPARATOR}', '{EVERY_TOPIC}' "
                               "for every story)")
    status = cell("status").strip().casefold()
    return Row(line, email, _clean_name(cell("name")), chosen, status if status in STATUSES else None, zone,
               topics, frequency)


def _clean_name(value: str) -> str | None:
    # Names end up in a To: header: no line breaks or other control characters.
    name = " ".join(_undefused(value.strip()).split())
    if not name.isprintable():
        name = "".join(ch for ch in name if unicodedata.category(ch) != "Cc")
    return name[:200] or None


def import_chunk(session: Session, rows: list[Row], names: dict[int, str], report: ImportReport, *,
                 force: bool, confirmed: bool, now: datetime) -> None:
    emails = [row.email for row in rows]
    found = {s.email: s for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(emails)))}
    current: dict[int, dict[int, Subscription]] = {s.id: {} for s in found.values()}
    if found:
        for subscription in session.scalars(select(Subscription).where(Subscription.subscriber_id.in_(list(current)))):
            current[subscription.subscriber_id][subscription.newsletter_id] = subscription
    new: list[Row] = []
    gone = rights.erased(session, emails)
    kept: list[Row] = []  # rows not refused: their choices are applied below
    for row in rows:
        if row.email in gone:  # not even forced: only the reader's own confirmed sign-up brings it back
            # Named by its line only: a desk import keeps its report, and the address must not be kept again.
            report.skipped.append((row.line, rights.ERASED_ADDRESS, f"{rights.ERASED_REASON}, skipped"))
        elif row.file_status in consent.SUPPRESSED:
            # The file itself says they left (an export from here or elsewhere): never a signup, even forced.
            report.skipped.append((row.line, row.email, f"marked {row.file_status} in the file, skipped"))
        elif row.file_status == "pending" and confirmed:
            # Nobody vouches for an address the file says never confirmed: the reader must.
            report.skipped.append((row.line, row.email, "not confirmed yet in the file, skipped "
                                   "(import it with --double-opt-in to ask them to confirm)"))
        elif row.email not in found:
            new.append(row)
            kept.append(row)
        else:
            subscriber = found[row.email]
            unchanged = report.unchanged
            if _existing(session, subscriber, current[subscriber.id], row, names, report,
                         force=force, confirmed=confirmed, now=now):
                kept.append(row)
                if report.unchanged > unchanged and _choose(current[subscriber.id], row):
                    report.unchanged, report.updated = report.unchanged - 1, report.updated + 1
    if confirmed:
        _add_confirmed(session, new, names, report, now)
    else:
        for row in new:
            signup = consent.subscribe(session, row.email, row.newsletter_ids, name=row.name, confirmed=False,
                                       now=now, timezone=row.timezone)
            consent.record_event(session, signup.subscriber.id, "imported", "import", now=now,
                                 detail=f"{_into(row.newsletter_ids, names)}, waiting for the reader to confirm",
                                 newsletter_id=_single(row.newsletter_ids))
            if signup.send_confirmation:
                report.to_confirm.append(signup.subscriber.id)
            report.added += 1
    _apply_choices(session, [row for row in kept if row.topics is not None or row.frequency is not None])


def _choose(subscriptions: dict[int, Subscription], row: Row) -> bool:
    """Set the row's choices on the subscriptions to its newsletters; whether any changed."""
    changed = False
    for newsletter_id in row.newsletter_ids:
        subscription = subscriptions.get(newsletter_id)
        if subscription is None:
            continue
        if row.topics is not None and (subscription.topics or None) != row.topics[newsletter_id]:
            subscription.topics, changed = row.topics[newsletter_id], True
        if row.frequency is not None and subscription.frequency != row.frequency:
            subscription.frequency, changed = row.frequency, True
    return changed


def _apply_choices(session: Session, rows: list[Row]) -> None:
    """The chunk's choices, once every subscription it made exists."""
    if not rows:
        return
    session.flush()
    by_email = {row.email: row for row in rows}
    found: dict[str, dict[int, Subscription]] = {}
    for email, subscription in session.execute(
            select(Subscriber.email, Subscription).join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .where(Subscriber.email.in_(list(by_email)))).all():
        found.setdefault(email, {})[subscription.newsletter_id] = subscription
    for email, subscriptions in found.items():
        _choose(subscriptions, by_email[email])


def _add_confirmed(session: Session, rows: list[Row], names: dict[int, str], report: ImportReport,
                   now: datetime) -> None:
    """The chunk's new addresses in three multi-row INSERTs. Their "imported" events are written here, not
    by consent.record_event: it flushes once per event (~1 ms), which was most of a 20,000-row import."""
    if not rows:
        return
    ids = dict(session.execute(insert(Subscriber).returning(Subscriber.email, Subscriber.id), [
        dict(email=row.email, name=row.name, status="confirmed", created_at=now, confirmed_at=now,
             confirmations_sent=0, timezone=row.timezone) for row in rows]).all())
    session.execute(insert(Subscription), [
        dict(subscriber_id=ids[row.email], newsletter_id=newsletter_id, status="active", created_at=now)
        for row in rows for newsletter_id in row.newsletter_ids])
    session.execute(insert(SubscriberEvent), [
        dict(subscriber_id=ids[row.email], kind="imported", source="import", detail=_into(row.newsletter_ids, names),
             newsletter_id=_single(row.newsletter_ids), at=now) for row in rows])
    report.added += len(rows)


def _existing(session: Session, subscriber: Subscriber, subscriptions: dict[int, Subscription], row: Row,
              names: dict[int, str], report: ImportReport, *, force: bool, confirmed: bool, now: datetime) -> bool:
    """An address we know: brought up to date with the row; False when the row was refused."""
    left = [n for n in row.newsletter_ids if n in subscriptions and subscriptions[n].status == "unsubscribed"]
    if subscriber.status in consent.SUPPRESSED or left:
        if not force:
            what = subscriber.status if subscriber.status in consent.SUPPRESSED else (
                "unsubscribed from " + ", ".join(names[n] for n in left))
            report.skipped.append((row.line, row.email, f"previously {what}, {FORCE_HINT}"))
            return False
        _fill_name(subscriber, row)
        if confirmed:
            subscriber.status, subscriber.confirmed_at = "confirmed", subscriber.confirmed_at or now
            _activate(session, subscriber, subscriptions, row.newsletter_ids, now)
            detail = "forced by an import"
        else:
            # Renewed consent the reader confirms themselves: nothing goes out until they do.
            subscriber.status = "pending"
            for newsletter_id in row.newsletter_ids:
                if newsletter_id in subscriptions:  # a bounced address kept its subscriptions active
                    subscriptions[newsletter_id].status = "pending"
                    subscriptions[newsletter_id].unsubscribed_at = None
            signup = consent.subscribe(session, row.email, row.newsletter_ids, confirmed=False, now=now)
            if signup.send_confirmation:
                report.to_confirm.append(subscriber.id)
            detail = "forced by an import, waiting for the reader to confirm"
        consent.record_event(session, subscriber.id, "resubscribed", "import", detail=detail, now=now,
                             newsletter_id=_single(row.newsletter_ids))
        report.resubscribed += 1
        return True
    changed = _fill_name(subscriber, row)
    # A subscription waiting for the reader's confirmation isn't missing: the import leaves it waiting.
    if missing := [n for n in row.newsletter_ids if n not in subscriptions]:
        changed = True
        if confirmed:
            if subscriber.status == "pending":
                subscriber.status, subscriber.confirmed_at = "confirmed", now
            _activate(session, subscriber, subscriptions, missing, now)
            detail = _into(missing, names)
        else:
            signup = consent.subscribe(session, row.email, missing, confirmed=False, now=now)
            if signup.send_confirmation:
                report.to_confirm.append(subscriber.id)
            detail = f"{_into(missing, names)}, waiting for the reader to confirm"
        consent.record_event(session, subscriber.id, "imported", "import", detail=detail, now=now,
                             newsletter_id=_single(missing))
    if changed:
        report.updated += 1
    else:
        report.unchanged += 1
    return True


def _activate(session: Session, subscriber: Subscriber, subscriptions: dict[int, Subscription],
              newsletter_ids: list[int], now: datetime) -> None:
    for newsletter_id in newsletter_ids:
        subscription = subscriptions.get(newsletter_id)
        if subscription is None:
            session.add(Subscription(subscriber_id=subscriber.id, newsletter_id=newsletter_id, status="active",
                                     created_at=now))
        elif subscription.status != "active":
            if subscription.status == "unsubscribed":
                choices.start_afresh(session, subscription)
            subscription.status, subscription.unsubscribed_at = "active", None


def _fill_name(subscriber: Subscriber, row: Row) -> bool:
    if row.name and not subscriber.name:
        subscriber.name = row.name
        return True
    return False


def _into(newsletter_ids: list[int], names: dict[int, str]) -> str:
    return "into " + ", ".join(names[n] for n in newsletter_ids)


def _single(newsletter_ids: list[int]) -> int | None:
    return newsletter_ids[0] if len(newsletter_ids) == 1 else None


# ── export ───────────────────────────────────────────────────────────────────


def export_csv(session: Session, out: TextIO, newsletter_id: int | None = None,
               statuses: list[str] | None = None) -> int:
    """Write subscribers as CSV (EXPORT_COLUMNS), streamed from the database; returns how many.

    `newsletter_id`: only those subscribed to it (active or waiting for confirmation).
    The newsletters column holds the active subscriptions: importing the file again changes nothing. The
    topics and frequency columns hold the reader's choices for `newsletter_id`'s subscription, or for all
    of theirs when those agree (else empty cells, which an import reads as "as they are"); timezone, the
    reader's own (empty: each newsletter's), which an import keeps for a new reader."""
    active = (select(Subscription.subscriber_id, Subscription.newsletter_id, Subscription.topics,
                     Subscription.frequency, Newsletter.slug).join(Newsletter)
              .where(Subscription.status == "active").subquery())
    query = (select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.created_at,
                    Subscriber.confirmed_at, Subscriber.timezone, active.c.slug, active.c.newsletter_id,
                    active.c.topics, active.c.frequency)
             .outerjoin(active, active.c.subscriber_id == Subscriber.id)
             .order_by(Subscriber.id, active.c.slug))
    if newsletter_id is not None:
        query = query.where(Subscriber.id.in_(select(Subscription.subscriber_id).where(
            Subscription.newsletter_id == newsletter_id, Subscription.status.in_(("active", "pending")))))
    if statuses:
        query = query.where(Subscriber.status.in_(statuses))
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    # One row per (subscriber, active newsletter), in subscriber order: grouped here, never all in memory.
    rows = session.execute(query.execution_options(yield_per=1000))
    for _, group in itertools.groupby(rows, key=lambda r: r.id):
        found = list(group)
        first = found[0]
        mine = {(TOPIC_SEPARATOR.join(r.topics or []), r.frequency) for r in found
                if r.slug and newsletter_id in (None, r.newsletter_id)}
        topics, frequency = mine.pop() if len(mine) == 1 else ("", "")
        writer.writerow([_defused(first.email), _defused(first.name or ""), first.status,
                         ";".join(r.slug for r in found if r.slug), first.created_at.isoformat(),
                         first.confirmed_at.isoformat() if first.confirmed_at else "", _defused(topics), frequency,
                         first.timezone or ""])
        count += 1
    return count


def _defused(value: str) -> str:
    """A leading apostrophe keeps a spreadsheet from running a cell as a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value


def _undefused(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_START) else value

