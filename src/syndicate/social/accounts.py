"""Social accounts: their settings (pacing, teaser, network), their credentials (encrypted), their state.

An account's settings are plain JSON on its row, read through AccountSettings, which refuses what it
doesn't understand with a message that says what to write instead. Credentials are encrypted with a
key derived from SYNDICATE_SECRET_KEY: a copied database alone doesn't hand over the newsroom's accounts.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from syndicate import removals
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import Article, Post, SocialAccount, Switch, utcnow
from syndicate.social import networks, teaser

NETWORKS = ("x", "mastodon", "bluesky")
# What each network needs to post; the optional ones may be left out.
SECRETS = {
    "x": ("consumer_key", "consumer_secret", "access_token", "access_token_secret"),
    "mastodon": ("access_token",),
    "bluesky": ("app_password",),
}
OPTIONAL_SECRETS = {"x": ("bearer_token",), "mastodon": (), "bluesky": ()}
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
DURATION = re.compile(r"(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?")


# ── settings ─────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class AccountSettings:
    """How one account posts. Times are in the account's own zone, so a window means what it says
    across daylight-saving changes."""

    timezone: str = "UTC"
    window: str = "07:00-22:00"  # "HH:MM-HH:MM" (may cross midnight) or "always"
    min_gap: int = 600  # seconds between two posts
    daily_cap: int = 30  # posts in any 24 hours (X's free tiers have been as low as 17)
    max_age: int = 12 * 3600  # seconds: a regular post older than this when its turn comes is skipped
    breaking_categories: tuple[str, ...] = ()  # an article in one of these goes in the breaking lane
    skip_categories: tuple[str, ...] = ()  # an article in one of these is not posted here ("Sponsored" on X)
    dry_run: bool = False  # record the exact request and planned time; call nothing
    instance: str | None = None  # Mastodon: the instance, e.g. https://mastodon.social
    handle: str | None = None  # Bluesky: the account's handle, e.g. newsroom.bsky.social
    service: str = "https://bsky.social"  # Bluesky: the PDS
    visibility: str = "unlisted"  # Mastodon
    language: str | None = None  # ISO 639-1, e.g. "en": for posts whose story's own language is unknown
    max_characters: int | None = None  # Mastodon: the instance's limit, read by `account test` (default 500)
    url_cost: int | None = None  # Mastodon: characters a link counts on the instance (default 23)
    images: bool = True  # a story's picture goes with its post (X and Mastodon then show it, not the link card)
    max_image_bytes: int | None = None  # Mastodon: the instance's picture limit, read by `account test` (16 MB)
    max_image_pixels: int | None = None  # Mastodon: the instance's width × height limit, likewise (33,177,600)
    teaser: dict = field(default_factory=dict)  # teaser.Options: hashtags, hashtag_map, deny, utm_*, template

    @classmethod
    def from_dict(cls, data: dict) -> AccountSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown account setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        for key in ("breaking_categories", "skip_categories"):
            if key in values:
                values[key] = _categories(key, values[key])
        settings = cls(**values)
        settings.check()
        return settings

    def to_dict(self) -> dict:
        data = asdict(self)
        data["breaking_categories"] = list(self.breaking_categories)
        data["skip_categories"] = list(self.skip_categories)
        return data

    def skips(self, categories) -> str | None:
        """The first of a story's categories this account leaves out, or None."""
        skipped = {c.casefold() for c in self.skip_categories}
        return next((c for c in categories or () if isinstance(c, str) and c.casefold() in skipped), None)

    def check(self) -> None:
        _ = self.zone, self.hours  # each raises with a clear message
        for name in ("min_gap", "daily_cap", "max_age"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"account setting {name} must be a whole number ≥ 0, not {value!r}")
        if self.daily_cap < 1:
            raise InvalidInput("account setting daily_cap must be at least 1 (pause the account to stop it)")
        if not isinstance(self.images, bool):
            raise InvalidInput(f"account setting images must be true or false, not {self.images!r}")
        for name in ("max_image_bytes", "max_image_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidInput(f"account setting {name} must be a whole number ≥ 1 (or unset), not {value!r}")
        if self.visibility not in ("public", "unlisted", "private"):
            raise InvalidInput(f"visibility must be public, unlisted or private, not {self.visibility!r}")
        _ = self.teaser_options

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise InvalidInput(f"unknown time zone {self.timezone!r}; use an IANA name like Europe/Berlin") from e

    @property
    def hours(self) -> tuple[time, time] | None:
        """The posting window's (start, end) local times; None: any time."""
        return parse_window(self.window)

    @property
    def teaser_options(self) -> teaser.Options:
        return teaser.Options.from_dict(self.teaser)

    def rules(self, network: str) -> networks.Network:
        """The length rules teasers are made to: the instance's own for Mastodon once read."""
        if network != "mastodon":  # X's and Bluesky's rules are the same everywhere
            return networks.network(network)
        return networks.network(network, limit=self.max_characters, url_cost=self.url_cost)


def _categories(key: str, value) -> tuple[str, ...]:
    """A list of category names, blanks left out: ["Sponsored", "Ads"]."""
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(c, str) for c in value):
        raise InvalidInput(f"account setting {key} must be a list of category names, not {value!r}")
    return tuple(dict.fromkeys(c.strip() for c in value if c.strip()))


def parse_window(text: str) -> tuple[time, time] | None:
    if text.strip().lower() in ("always", "any", ""):
        return None
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    try:
        if not match:
            raise ValueError
        start, end = (time(int(match[1]), int(match[2])), time(int(match[3]) % 24, int(match[4])))
    except ValueError:
        raise InvalidInput(f"posting window {text!r} is not like 07:00-22:00 (or 'always')") from None
    if start == end:
        raise InvalidInput(f"posting window {text!r} is empty; for any time of day write 'always'")
    return start, end


def parse_duration(text: str) -> int:
    """"90s", "10m", "2h", "1d", "1h30m" or a number of seconds → seconds."""
    text = str(text).strip().lower()
    if text.isdigit():
        return int(text)
    match = DURATION.fullmatch(text)
    if not text or not match or not any(match.groups()):
        raise InvalidInput(f"duration {text!r} is not like 90s, 10m, 2h, 1d or 1h30m")
    d, h, m, s = (int(g or 0) for g in match.groups())
    return int(timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds())


def settings_of(account: SocialAccount) -> AccountSettings:
    return AccountSettings.from_dict(account.settings or {})


# ── credentials ──────────────────────────────────────────────────────────────


def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"syndicate social credentials").derive(
        secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret_key: str, value: dict | str) -> str:
    return _fernet(secret_key).encrypt(json.dumps(value).encode()).decode()


def unseal(secret_key: str, token: str | None, what: str = "credentials"):
    if token is None:
        return None
    try:
        return json.loads(_fernet(secret_key).decrypt(token.encode()))
    except InvalidToken:
        raise InvalidInput(f"the account's {what} cannot be read with this SYNDICATE_SECRET_KEY (was it changed?); "
                           "set them again with `syndicate account edit NAME --credentials`") from None


def check_credentials(network: str, values: dict) -> dict:
    required, optional = SECRETS[network], OPTIONAL_SECRETS[network]
    missing = [k for k in required if not values.get(k)]
    if missing:
        raise InvalidInput(f"a {network} account needs {', '.join(missing)}")
    unknown = sorted(set(values) - set(required) - set(optional))
    if unknown:
        raise InvalidInput(f"{', '.join(unknown)} is not a {network} credential; "
                           f"expected {', '.join(required + optional)}")
    return {k: v for k, v in values.items() if v}


# ── accounts ─────────────────────────────────────────────────────────────────


def add(session: Session, secret_key: str, name: str, network: str, settings: dict,
        credentials: dict | None) -> SocialAccount:
    if not NAME.fullmatch(name):
        raise InvalidInput(f"account name {name!r}: use lower-case letters, digits, '-' and '_' (e.g. x-newsroom)")
    if network not in NETWORKS:
        raise InvalidInput(f"network {network!r} is not one of {', '.join(NETWORKS)}")
    if session.scalar(select(SocialAccount).where(SocialAccount.name == name)):
        raise InvalidInput(f"an account named {name!r} exists already; pick another name or edit it")
    parsed = AccountSettings.from_dict(settings)
    _check_network_settings(network, parsed, credentials)
    account = SocialAccount(name=name, network=network, settings=parsed.to_dict(), status="active",
                            credentials=seal(secret_key, check_credentials(network, credentials))
                            if credentials else None)
    session.add(account)
    session.flush()
    return account


def edit(session: Session, secret_key: str, account: SocialAccount, settings: dict,
         credentials: dict | None = None) -> SocialAccount:
    parsed = AccountSettings.from_dict(settings_of(account).to_dict() | settings)
    _check_network_settings(account.network, parsed, credentials or account.credentials)
    account.settings = parsed.to_dict()
    if credentials:
        account.credentials = seal(secret_key, check_credentials(account.network, credentials))
        account.session = None  # a new password: log in afresh
    return account


def _check_network_settings(network: str, settings: AccountSettings, credentials) -> None:
    live = not settings.dry_run and bool(credentials)
    if network == "mastodon" and live and not settings.instance:
        raise InvalidInput("a Mastodon account needs its instance: --instance https://mastodon.social")
    if network == "bluesky" and live and not settings.handle:
        raise InvalidInput("a Bluesky account needs its handle: --handle newsroom.bsky.social")


def by_name(session: Session, name: str) -> SocialAccount:
    account = session.scalar(select(SocialAccount).where(SocialAccount.name == name))
    if account is None:
        names = ", ".join(session.scalars(select(SocialAccount.name).order_by(SocialAccount.name))) or "none yet"
        raise NotFound(f"no social account named {name!r} (accounts: {names}); add one with `syndicate account add`")
    return account


def all_accounts(session: Session) -> list[SocialAccount]:
    """Every account, paused ones too, by name."""
    return list(session.scalars(select(SocialAccount).order_by(SocialAccount.name)))


def pause(account: SocialAccount, reason: str) -> None:
    if account.status == "disabled":  # a network's refusal mid-post must not wake a disabled account
        return
    account.status, account.paused_reason = "paused", reason


def resume(account: SocialAccount) -> None:
    """Active again; its backlog drains at the account's pace (one post per gap), never in a burst."""
    if account.status == "disabled":
        raise InvalidInput(f"account {account.name!r} is disabled: `syndicate account enable {account.name}` "
                           "brings it back")
    account.status, account.paused_reason = "active", None  # a network's "wait until" (parked_until) still holds


# ── disabling and deleting (the CLI, the desk) ───────────────────────────────

WAITING = ("pending", "held")  # posts a disabled account skips
PUBLISHED = ("posted", "ambiguous", "retracted")  # posts that reached (or may have reached) the network


def _count(session: Session, account: SocialAccount, statuses: tuple[str, ...]) -> int:
    return session.scalar(select(func.count()).select_from(Post).where(
        Post.account_id == account.id, Post.status.in_(statuses))) or 0


def disable_plan(session: Session, account: SocialAccount) -> removals.Plan:
    waiting, published = _count(session, account, WAITING), _count(session, account, PUBLISHED)
    plan = removals.Plan(f"account {account.name} ({account.network})", [
        "nothing more is planned or posted on it",
        f"its {waiting} waiting {'post is' if waiting == 1 else 'posts are'} skipped, each saying why",
        f"its {published} published {'post stays' if published == 1 else 'posts stay'} on the network and in the "
        "ledger; withdrawing a story still takes them back (the credentials are kept for that)",
        f"`syndicate account enable {account.name}` brings it back, for stories first seen from then on"])
    if account.status == "disabled":
        plan.refused = f"account {account.name!r} is disabled already"
    return plan


def disable(session: Session, account: SocialAccount, by: str, now: datetime | None = None) -> removals.Plan:
    """Posts nothing from now on: its waiting posts are skipped with why, nothing new is planned for it."""
    plan = disable_plan(session, account)
    plan.check()
    now = now or utcnow()
    why = f"not posted: the account {account.name} was disabled by {by} on {now:%Y-%m-%d %H:%M} UTC"
    session.execute(update(Post).where(Post.account_id == account.id, Post.status.in_(WAITING))
                    .values(status="skipped", error=why, next_attempt_at=None)
                    .execution_options(synchronize_session=False))
    account.status, account.paused_reason = "disabled", f"disabled by {by}"
    removals.record(session, "account", account.name, "disabled", by, plan.detail, now)
    return plan


def enable(session: Session, account: SocialAccount, by: str, now: datetime | None = None) -> SocialAccount:
    """Active again for stories first seen from now on: those that came while it was disabled get a skipped
    post each, saying why, rather than a burst of old news."""
    if account.status != "disabled":
        raise InvalidInput(f"account {account.name!r} is {account.status}, not disabled"
                           + (f": `syndicate account resume {account.name}`" if account.status == "paused" else ""))
    now = now or utcnow()
    planned = select(Post.article_id).where(Post.account_id == account.id)
    meanwhile = session.scalars(select(Article.id).where(
        Article.first_seen_at >= account.created_at, Article.first_seen_at <= now, Article.id.not_in(planned))).all()
    for article_id in meanwhile:
        session.add(Post(article_id=article_id, account_id=account.id, share=0, text="", payload={}, status="skipped",
                         error=f"not posted: the story came while the account {account.name} was disabled",
                         created_at=now))
    account.status, account.paused_reason = "active", None
    removals.record(session, "account", account.name, "enabled", by,
                    f"posting again; {len(meanwhile)} stories that came meanwhile are not posted", now)
    return account


def delete_plan(session: Session, account: SocialAccount) -> removals.Plan:
    published = _count(session, account, PUBLISHED)
    sending = _count(session, account, ("sending",))
    others = session.scalar(select(func.count()).select_from(Post).where(Post.account_id == account.id)) or 0
    plan = removals.Plan(f"account {account.name} ({account.network})", [
        "its credentials and settings are erased",
        f"its {others} unpublished {'post is' if others == 1 else 'posts are'} deleted (waiting, skipped, failed, "
        "cancelled)"])
    if sending:
        plan.refused = f"a post is going out on {account.name!r} now: try again in a minute, or disable it"
    elif published:
        plan.refused = (f"{published} {'post' if published == 1 else 'posts'} went out on {account.name!r}: their rows "
                        "are the record of what was published and what withdrawing a story takes back, so it "
                        f"can't be deleted; disable it instead (`syndicate account disable {account.name}`)")
    return plan


def delete(session: Session, account: SocialAccount, by: str, now: datetime | None = None) -> removals.Plan:
    """Only an account that never published: its unpublished posts go with it (the database cascades)."""
    plan = delete_plan(session, account)
    plan.check()
    removals.record(session, "account", account.name, "deleted", by, plan.detail, now)
    session.delete(account)
    session.flush()
    return plan


def describe(account: SocialAccount, env_x: bool = False) -> dict:
    settings = account.settings or {}
    return dict(name=account.name, network=account.network, status=account.status,
                paused_reason=account.paused_reason, mode="dry-run" if is_dry_run(account, env_x) else "live",
                parked_until=account.parked_until, last_dispatched_at=account.last_dispatched_at,
                settings=settings, has_credentials=account.credentials is not None)


def is_dry_run(account: SocialAccount, env_x: bool = False) -> bool:
    """Dry run by setting, or for want of credentials (an X account may use SYNDICATE_X_*: `env_x`)."""
    if (account.settings or {}).get("dry_run"):
        return True
    return account.credentials is None and not (env_x and account.network == "x")


# ── the global kill switch ───────────────────────────────────────────────────

SOCIAL = "social"


def switch(session: Session, name: str = SOCIAL) -> Switch:
    row = session.get(Switch, name)
    if row is None:
        row = Switch(name=name, engaged=False, changed_at=utcnow())
        session.add(row)
        session.flush()
    return row


def social_paused(session: Session) -> Switch | None:
    row = session.get(Switch, SOCIAL)
    return row if row is not None and row.engaged else None


def pause_social(session: Session, reason: str, now: datetime | None = None) -> Switch:
    row = switch(session)
    row.engaged, row.reason, row.changed_at = True, reason, now or utcnow()
    return row


def resume_social(session: Session, now: datetime | None = None) -> Switch:
    """Posting resumes at each account's pace (one post per gap, the daily cap), never in a burst."""
    row = switch(session)
    row.engaged, row.reason, row.changed_at = False, None, now or utcnow()
    return row
