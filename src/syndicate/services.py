"""Wiring: settings → engine, sessions, mail transport and social clients, chosen in one place."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from syndicate import db, social, templating
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

    def social_client(self, account: SocialAccount) -> social.SocialClient:
        return social.client_for(account, self.settings)

    def forget_connections(self) -> None:
        """After a fork: drop the parent's pooled connections without closing them under it."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)

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
