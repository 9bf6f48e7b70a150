"""Subscribers in and out as CSV: an editor's list from a spreadsheet or another tool, and back.

An import checks the whole file before it writes anything, reports every row it refuses with its
line in the file (the good rows go in anyway), never adds back an address that unsubscribed,
bounced or complained unless the editor forces it, and changes nothing when the same file comes twice.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TextIO

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from syndicate.errors import InvalidInput
from syndicate.models import Newsletter, Subscriber, SubscriberEvent, Subscription, utcnow
from syndicate.subscribers import choices, consent

CHUNK = 500  # addresses per IN (…) query: one round trip per 500 rows, well under any parameter limit
DELIMITERS = (",", ";", "\t")  # Excel writes ";" where the decimal separator is a comma
COLUMNS = {  # header cell (case-folded, spaces collapsed) → what it holds
    "email": "email", "e-mail": "email", "email address": "email", "e-mail address": "email",
    "name": "name",
    "newsletters": "newsletters", "newsletter": "newsletters",
    "status": "status",
    "topics": "topics", "topic": "topics",
    "frequency": "frequency",
}
# Topics in one cell: "|" between them. Not ";" or ",": either may be the file's own delimiter (Excel
# writes ";"), and not spaces: a topic may have them ("Local news"). "*": every story again.
TOPIC_SEPARATOR = "|"
EVERY_TOPIC = "*"
STATUSES = ("pending", "confirmed", *consent.SUPPRESSED)
EXPORT_COLUMNS = ["email", "name", "status", "newsletters", "created_at", "confirmed_at", "topics", "frequency"]
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
    `force`: add back addresses that unsubscribed, bounced or complained (renewed consent)."""
    now = now or utcnow()
    header, records = read_table(decode(data))
    columns = header_columns(header)
    slugs = newsletters_checked(session, columns, newsletter_ids)
    report = ImportReport()
    offered = _Offered(session)
    rows = list(fit_rows(records, columns, slugs, newsletter_ids, report, offered))
    names = {newsletter_id: slug for slug, newsletter_id in slugs.items() if newsletter_id is not None}
    for i in range(0, len(rows), CHUNK):
        import_chunk(session, rows[i:i + CHUNK], names, report, force=force, confirmed=confirmed, now=now)
    session.flush()
    return report


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
        line = data[:e.start].count(b"\n") + 1
        raise InvalidInput(f"the file isn't UTF-8 (line {line} has byte 0x{data[e.start]:02x}): save it as "
                           "UTF-8 CSV (in Excel: Save As → 'CSV UTF-8') and import it again; "
                           "nothing was imported") from e


def read_table(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and every non-blank record with the physical line it starts on (quoted fields may span lines)."""
    delimiter = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    records: list[tuple[int, list[str]]] = []
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = record
            else:
                records.append((start, record))
    except csv.Error as e:
        raise InvalidInput(f"line {last + 1} of the file can't be read as CSV ({e}); nothing was imported") from e
    if header is None:
        raise InvalidInput("the file is empty: it needs a header row with an email column, then one row per address")
    return header, records


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


class _Offered:
    """Each newsletter's topics (choices.topics_of), read once per import."""

    def __init__(self, session: Session):
        self.session, self.found = session, {}

    def __call__(self, newsletter_id: int) -> tuple[Newsletter, list[str]]:
        if newsletter_id not in self.found:
            newsletter = self.session.get(Newsletter, newsletter_id)
            self.found[newsletter_id] = newsletter, choices.topics_of(self.session, newsletter)
        return self.found[newsletter_id]


def _choices_of(topics_cell: str, frequency_cell: str, chosen: list[int], offered: _Offered):
    """The row's topics (by newsletter) and frequency, or InvalidInput saying what is wrong."""
    frequency = choices.check_frequency(frequency_cell) if frequency_cell.strip() else None
    cell = _undefused(topics_cell.strip())
    if not cell:
        return None, frequency
    listed = [t.strip() for t in cell.split(TOPIC_SEPARATOR) if t.strip()]
    if listed == [EVERY_TOPIC]:
        return dict.fromkeys(chosen), frequency
    return {n: choices.check_topics(*offered(n), listed) for n in chosen}, frequency


def fit_rows(records: list[tuple[int, list[str]]], columns: dict[str, int], slugs: dict[str, int | None],
             default_ids: list[int], report: ImportReport, offered: _Offered | None = None) -> Iterator[Row]:
    """Rows fit to import; bad ones and repeats go to the report."""
    seen: dict[str, int] = {}

    def cell(record: list[str], role: str) -> str:
        i = columns.get(role)
        return record[i] if i is not None and i < len(record) else ""

    for line, record in records:
        raw = cell(record, "email")
        value = _undefused(raw.strip())
        if not value:
            report.bad.append((line, raw, "no email address"))
            continue
        try:
            email = consent.normalise_email(value)
        except InvalidInput as e:
            report.bad.append((line, raw, f"not an email address we can send to: {e.__cause__ or e}"))
            continue
        chosen = default_ids
        if listed := [s for s in re.split(r"[;,\s]+", cell(record, "newsletters").casefold()) if s]:
            if unknown := [s for s in listed if s not in slugs]:
                report.bad.append((line, raw, f"no newsletter {', '.join(map(repr, unknown))} (newsletters column)"))
                continue
            if archived := [s for s in listed if slugs[s] is None]:
                report.bad.append((line, raw, f"newsletter {', '.join(map(repr, archived))} is archived: it takes no "
                                              "new readers (newsletters column)"))
                continue
            chosen = list(dict.fromkeys(slugs[s] for s in listed))
        if not chosen:
            report.bad.append((line, raw, "no newsletter: fill its newsletters cell or give --newsletter"))
            continue
        if email in seen:
            report.duplicates.append((line, email, f"duplicate of line {seen[email]}"))
            continue
        topics, frequency = None, None
        if offered is not None and (cell(record, "topics").strip() or cell(record, "frequency").strip()):
            try:
                topics, frequency = _choices_of(cell(record, "topics"), cell(record, "frequency"), chosen, offered)
            except InvalidInput as e:
                column = "frequency" if "frequency" in str(e) else "topics"
                report.bad.append((line, raw, f"{e} ({column} column; topics separated by "
                                              f"'{TOPIC_SEPARATOR}', '{EVERY_TOPIC}' for every story)"))
                continue
        seen[email] = line
        status = cell(record, "status").strip().casefold()
        yield Row(line, email, _clean_name(cell(record, "name")), chosen, status if status in STATUSES else None,
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
    kept: list[Row] = []  # rows not refused: their choices are applied below
    for row in rows:
        if row.file_status in consent.SUPPRESSED:
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
                                       now=now)
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
             confirmations_sent=0) for row in rows]).all())
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
    of theirs when those agree (else empty cells, which an import reads as "as they are")."""
    active = (select(Subscription.subscriber_id, Subscription.newsletter_id, Subscription.topics,
                     Subscription.frequency, Newsletter.slug).join(Newsletter)
              .where(Subscription.status == "active").subquery())
    query = (select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.created_at,
                    Subscriber.confirmed_at, active.c.slug, active.c.newsletter_id, active.c.topics,
                    active.c.frequency)
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
                         first.confirmed_at.isoformat() if first.confirmed_at else "", _defused(topics), frequency])
        count += 1
    return count


def _defused(value: str) -> str:
    """A leading apostrophe keeps a spreadsheet from running a cell as a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value


def _undefused(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_START) else value

