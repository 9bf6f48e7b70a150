"""What every command group shares: the services, opened once a command needs them; one way to print
rows (a table, or --json); and lazy imports, so each command pays only for the libraries it uses."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from syndicate.config import Settings
from syndicate.errors import SyndicateError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from syndicate.services import Services


def lazy(name: str) -> ModuleType:
    """Module `name`, loaded at its first attribute lookup (importlib's LazyLoader). `syndicate --help`
    builds every command group; with the stages behind this, it loads none of their libraries."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def services(ctx: click.Context, migrate: bool = False, check: bool = True) -> Services:
    """Settings are read when a command needs them, so `--help` works with any environment."""
    from syndicate import db
    from syndicate import services as wiring

    root = ctx.find_root()
    svc = root.meta.get("services")
    if svc is None:
        settings = Settings.from_env(root.meta.get("env"))
        # Celery and the broker's libraries only if this process has them loaded already: a command that
        # queues work imports the tasks, which then read these settings (services.current()).
        tasks = sys.modules.get("syndicate.tasks")
        svc = tasks.configure(settings) if tasks else wiring.use(settings)
        root.meta["services"] = svc
    if migrate:
        db.upgrade(svc.engine)
    elif check and not db.migrated(svc.engine):
        raise SyndicateError("the database has no tables yet: run `syndicate db upgrade` first")
    return svc


@contextmanager
def opened(ctx: click.Context) -> Iterator[tuple[Services, Session]]:
    """A command's services and one transaction, committed when the block ends (rolled back on an error)."""
    from syndicate.db import transaction

    svc = services(ctx)
    with transaction(svc.Session) as session:
        yield svc, session


def emit(rows: list[dict], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, default=json_default, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: min(60, max(len(c), *(len(cell(r[c])) for r in rows))) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(cell(row[c])[: widths[c]].ljust(widths[c]) for c in columns))


def cell(value) -> str:
    """A value as a person reads it in a table: a time with its zone (a table beside a Berlin schedule must
    not leave one to guess UTC), counts as words, lists as lists, and never a line break or a Python repr."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") + (f" {value.tzname()}" if value.tzinfo else "")
    if isinstance(value, dict):
        return ", ".join(f"{n} {key}" if isinstance(n, int) and not isinstance(n, bool) else f"{key}: {cell(n)}"
                         for key, n in value.items()) or "—"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(cell(item) for item in value) or "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def in_zone(value: datetime | None, zone: str) -> datetime | None:
    """A stored time (UTC) in a newsletter's or account's own zone, for tables that sit beside its schedule."""
    return value.astimezone(ZoneInfo(zone)) if value is not None else None


def json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def progress(items, label):
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


@contextmanager
def counting(label: str, unit: str, shown: bool = True, at_least: int = 0
             ) -> Iterator[Callable[[int, int], None] | None]:
    """A bar on standard error for a long step, fed `(done, total)` as it goes, with the rate in `unit`/s; or
    None when nobody watches: standard error not a terminal (a pipe, a log, cron), or `shown` false (--json).
    A total under `at_least` is over too soon to need one."""
    if not shown or not sys.stderr.isatty():
        yield None
        return
    bar: click.progressbar | None = None
    started, last = time.monotonic(), 0

    def rate(_item) -> str:
        elapsed = time.monotonic() - started
        return f"{last / elapsed:,.0f} {unit}/s" if elapsed > 0 and last else ""

    def step(done: int, total: int) -> None:
        nonlocal bar, last
        if total < at_least:
            return
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True,
                                    item_show_func=rate)
            bar.__enter__()
        bar.update(done - last)
        last = done

    try:
        yield step
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def removing(plan, verb: str, yes: bool, force: bool = False) -> None:
    """Say what removing something takes along (a removals.Plan), refuse with why if it can't be done, and ask
    before it is (`--yes` doesn't ask)."""
    if plan.refused:
        raise SyndicateError(plan.refused)
    if plan.needs_force and not force:
        raise SyndicateError(plan.needs_force)
    click.echo(f"{verb} {plan.what}:")
    for line in plan.consequences:
        click.echo(f"  - {line}")
    if not yes:
        click.confirm(f"{verb} {plan.what}?", abort=True)


yes_option = click.option("--yes", is_flag=True, help="Do it without asking first.")


def show(record: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, default=json_default, ensure_ascii=False, indent=2))
        return
    width = max(map(len, record))
    for key, value in record.items():
        click.echo(f"{key.replace('_', ' ') + ':':<{width + 2}}{cell(value)}")


def local_time(text: str, zone: str) -> datetime:
    """ISO 8601; without an offset, the time is read in the newsletter's own zone. "now" is now."""
    if text.strip().lower() == "now":
        return datetime.now(ZoneInfo(zone))
    try:
        at = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time; use e.g. '2026-12-01 07:00' (in the newsletter's "
                                 "zone), 2026-12-01T07:00+01:00, or now") from None
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(zone))
