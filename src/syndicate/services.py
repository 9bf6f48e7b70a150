"""Wiring: settings → engine, sessions, mail transport and social clients, chosen in one place."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from syndicate import db, pacing, social, templating
from syndicate.config import Settings
from syndicate.mail import OutboxTransport, SmtpTransport, Transport
from syndicate.models import SocialAccount


@dataclass
class Services:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings.database_url)

    @cached_property
    def Session(self) -> sessionmaker:
        return db.make_sessionmaker(self.engine)

    @cached_property
    def transport(self) -> Transport:
        if self.settings.smtp is None:
            return OutboxTransport(self.settings.outbox / "mail")
        return SmtpTransport(self.settings.smtp)

    @cached_property
    def pacer(self) -> pacing.Pacer:
        """Paces sending across all workers: in Redis when that is the broker, else in the database."""
        s = self.settings
        store = pacing.RedisStore(s.broker_url) if s.broker_url.startswith("redis") else pacing.DatabaseStore(
            self.engine)
        name = f"smtp:{s.smtp.host}:{s.smtp.port}" if s.smtp else "outbox"
        return pacing.Pacer(store, name, pacing.Limits(s.send_rate, s.send_hourly))

    def social_client(self, account: SocialAccount) -> social.SocialClient:
        return social.client_for(account, self.settings)

    def forget_connections(self) -> None:
        """After a fork: drop the parent's pooled connections without closing them under it."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)
        self.__dict__.pop("pacer", None)  # its lock and connections belong to the parent

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


_current: Services | None = None
_lock = threading.Lock()


def current() -> Services:
    """This process's services, built from the environment on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = Services(Settings.from_env())
            templating.use_template_dir(_current.settings.template_dir)
        return _current


def use(settings: Settings) -> Services:
    """Replace this process's services (the CLI after parsing options; tests)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = Services(settings)
        templating.use_template_dir(settings.template_dir)
        return _current
