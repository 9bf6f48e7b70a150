"""Wiring: settings → engine, sessions, mail transport and social clients, chosen in one place."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from syndicate import db, templating
from syndicate.config import Settings
from syndicate.models import SocialAccount

# Each part is imported where it is first made: a CLI listing needs the database, not the network clients
# (twitter-text's regexes alone cost 0.2 s) or the SMTP transport.
if TYPE_CHECKING:
    from syndicate.mail import pacing
    from syndicate.mail.transport import Transport
    from syndicate.social.clients.base import SocialClient


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
        from syndicate.mail.outbox import OutboxTransport
        from syndicate.mail.smtp import SmtpTransport

        if self.settings.smtp is None:
            return OutboxTransport(self.settings.outbox / "mail")
        return SmtpTransport(self.settings.smtp)

    @cached_property
    def pacer(self) -> pacing.Pacer:
        """Paces sending across all workers: in Redis when that is the broker, else in the database."""
        from syndicate.mail import pacing

        s = self.settings
        store = pacing.RedisStore(s.broker_url) if s.broker_url.startswith("redis") else pacing.DatabaseStore(
            self.engine)
        name = f"smtp:{s.smtp.host}:{s.smtp.port}" if s.smtp else "outbox"
        return pacing.Pacer(store, name, pacing.Limits(s.send_rate, s.send_hourly))

    def social_client(self, account: SocialAccount, dry_run: bool = False) -> SocialClient:
        """The account's network client: its own credentials; the SYNDICATE_X_* ones for an X account
        that has none; a recording client for a dry-run account (or one with no credentials)."""
        from syndicate.social import accounts
        from syndicate.social.clients.bluesky import BlueskyClient
        from syndicate.social.clients.dry_run import DryRunClient
        from syndicate.social.clients.mastodon import MastodonClient
        from syndicate.social.clients.x import XClient

        settings = accounts.settings_of(account)
        credentials = None if dry_run or settings.dry_run else accounts.unseal(self.settings.secret_key,
                                                                               account.credentials)
        if credentials is None and account.network == "x" and self.settings.x is not None and not (
                dry_run or settings.dry_run):
            x = self.settings.x
            credentials = dict(consumer_key=x.consumer_key, consumer_secret=x.consumer_secret,
                               access_token=x.access_token, access_token_secret=x.access_token_secret)
        if credentials is None:
            return DryRunClient(account.network, account.name, self.settings.outbox / "posts",
                                settings.rules(account.network), instance=settings.instance,
                                handle=settings.handle, service=settings.service,
                                visibility=settings.visibility, language=settings.language)
        if account.network == "x":
            return XClient(**credentials)
        if account.network == "mastodon":
            return MastodonClient(settings.instance, credentials["access_token"],
                                  visibility=settings.visibility, language=settings.language)
        return BlueskyClient(settings.handle, credentials["app_password"], service=settings.service,
                             session=accounts.unseal(self.settings.secret_key, account.session, "session"),
                             on_session=self._keeper(account.id), language=settings.language)

    def _keeper(self, account_id: int):
        """Store a Bluesky session string as soon as it changes: the next post reuses it, not a login."""
        from syndicate import db
        from syndicate.social import accounts

        def keep(session_string: str) -> None:
            with db.transaction(self.Session) as session:
                account = session.get(SocialAccount, account_id)
                if account is not None:
                    account.session = accounts.seal(self.settings.secret_key, session_string)
        return keep

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
