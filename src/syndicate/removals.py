"""The record of removals: every feed, newsletter and social account an editor disabled, archived or deleted
(and brought back), by whom and with what it took along. A deleted row leaves nothing of its own, so the
stage that removes it writes a line here in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from syndicate.errors import InvalidInput
from syndicate.models import Removal, utcnow

KINDS = ("feed", "newsletter", "account", "subscriber")  # a subscriber: erased, named by id only


@dataclass
class Plan:
    """What removing something would do, said before it is done: the CLI prints it and asks, the desk shows it
    on the confirmation page, and the same words are recorded once it is done."""

    what: str  # e.g. "feed 3 (https://news.example/feed/)"
    consequences: list[str] = field(default_factory=list)
    refused: str | None = None  # why it can't be done at all now, and what to do instead
    needs_force: str | None = None  # why it is refused unless forced (and what forcing costs)

    def allowed(self, force: bool = False) -> bool:
        return self.refused is None and (self.needs_force is None or force)

    def check(self, force: bool = False) -> None:
        """InvalidInput, saying why and what to do, unless it may go ahead."""
        if self.refused:
            raise InvalidInput(self.refused)
        if self.needs_force and not force:
            raise InvalidInput(self.needs_force)

    @property
    def detail(self) -> str:
        return "; ".join(self.consequences)


def record(session: Session, kind: str, name: str, action: str, by: str, detail: str = "",
           now: datetime | None = None) -> Removal:
    assert kind in KINDS, kind
    row = Removal(kind=kind, name=name[:2048], action=action, by=(by or "unknown")[:64], detail=detail,
                  at=now or utcnow())
    session.add(row)
    session.flush()
    return row


def recent(session: Session, limit: int = 100, kind: str | None = None) -> list[Removal]:
    """The newest first."""
    query = select(Removal).order_by(Removal.at.desc(), Removal.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(Removal.kind == kind)
    return list(session.scalars(query))


def any_deleted(session: Session, kind: str) -> bool:
    """Whether an editor ever deleted one of `kind`: the account made for a new install must not come back."""
    return bool(session.scalar(select(exists().where(Removal.kind == kind, Removal.action == "deleted"))))


def describe(row: Removal) -> dict:
    return dict(id=row.id, kind=row.kind, name=row.name, action=row.action, by=row.by, detail=row.detail, at=row.at)
