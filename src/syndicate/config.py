"""One settings object, read from SYNDICATE_* variables with strict parsing.

The defaults run on one machine with nothing installed: SQLite for data, kombu's
SQLAlchemy transport on a SQLite file as the broker, the outbox folder instead of
an SMTP server and dry-run instead of X.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from syndicate import private_files
from syndicate.errors import SettingsError
from syndicate.ledger import DEFAULT_CLAIM, LONGEST_CLAIM, SHORTEST_CLAIM, Leases

if TYPE_CHECKING:
    from syndicate.mail.dkim import DkimSettings

PREFIX = "SYNDICATE_"
X_KEYS = ("X_CONSUMER_KEY", "X_CONSUMER_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # "none", "starttls" or "tls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0


@dataclass(frozen=True)
class ImapSettings:
    """The mailbox `syndicate inbound poll` reads bounce reports, complaints and unsubscribe mails from."""

    host: str
    port: int
    security: str  # "tls", "starttls" or "none" (a server on this machine only)
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    done: str | None = None  # the folder handled mail is moved to; None: deleted
    timeout: float = 30.0


@dataclass(frozen=True)
class XCredentials:
    consumer_key: str
    consumer_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str
    smtp: SmtpSettings | None  # None: write messages to the outbox instead
    outbox: Path
    base_url: str
    secret_key: str = field(repr=False)
    # False: SYNDICATE_BASE_URL is unset and links name where this machine serves (web_host:web_port).
    base_url_given: bool = True
    x: XCredentials | None = None
    allow_private_feeds: bool = False
    # The pre-send checks ask each story's link (delivery.qa); off, they check the message only.
    link_check: bool = True
    durable_sent: bool = False  # PostgreSQL: each "sent" on the server's disk before the next message ends
    feed_timeout: float = 20.0
    feed_max_bytes: int = 10_000_000
    poll_interval: int = 900  # seconds between polls of one feed
    tick_interval: float = 30.0  # seconds between beat ticks that look for due work
    # Recipients per delivery task. What a batch costs besides its messages (its claim, its reads, its fold, its
    # task) was a sixth of a 200-row batch's time at 5 KB on PostgreSQL (bench/README.md); at 1,000 it is a
    # few per cent. With a send rate set a batch lasts size / rate: lower it so a batch ends within its task's
    # 3,000 s and within a warm shutdown (docker-compose.yml).
    batch_size: int = 1000
    retry_base: int = 60  # first retry of a deferred delivery, seconds
    retry_max: int = 1800  # kept below the broker's visibility timeout
    give_up_after: int = 4 * 24 * 3600  # a deferred delivery fails, a confirmation mail stops, after this
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    trusted_proxies: str = ""  # addresses whose X-Forwarded-For names the visitor; none by default
    template_dir: Path | None = None  # editors' templates, looked up before the bundled ones
    # The sender's postal address (lines kept), in every mail's footer unless a newsletter has its own.
    postal_address: str = ""
    soft_bounce_limit: int = 3  # deliveries given up on (4xx) within the window before an address is suppressed
    soft_bounce_window: int = 30 * 24 * 3600
    confirmations_per_address: int = 3  # confirmation mails per address per hour
    confirmations_per_client: int = 10  # confirmation mails per client (IP address) per hour
    bounce_events_per_hour: int = 1000  # addresses one API token may report to the bounce webhook per hour
    dkim: DkimSettings | None = None  # None: mail goes out unsigned
    send_rate: float | None = None  # messages per second to the mail transport, all workers together
    send_hourly: int | None = None  # messages per hour, all workers together
    claim_timeout: int = DEFAULT_CLAIM  # seconds a claimed row may go without word from its worker (ledger)
    # Inbound mail (bounce reports, complaints, mailto unsubscribes): read from a mailbox over IMAP, or
    # handed over by an MTA (`syndicate inbound serve` / `process`, said by SYNDICATE_INBOUND_MAIL=1).
    # Only then is mail sent with a return path that names it, and the mailto unsubscribe offered.
    inbound_mail: bool = False
    inbound_imap: ImapSettings | None = None
    inbound_poll_interval: int = 60  # seconds between polls of the IMAP mailbox
    inbound_keep: int = 1000  # inbound messages remembered for the operator (the oldest go first)
    bounce_domain: str | None = None  # the return path's and the mailto's domain; None: each sender's own

    @property
    def inbound(self) -> bool:
        """Something reads the mail sent back to us: return paths and the mailto unsubscribe may name it."""
        return self.inbound_mail or self.inbound_imap is not None

    @property
    def leases(self) -> Leases:
        return Leases(timedelta(seconds=self.claim_timeout))

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+")

    @property
    def dry_run_social(self) -> bool:
        return self.x is None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        data_dir = Path(get("DATA_DIR") or "syndicate-data").expanduser().absolute()
        database_url = get("DATABASE_URL") or f"sqlite:///{data_dir / 'syndicate.db'}"
        _check_database_url(database_url)
        broker_url = get("BROKER_URL") or f"sqla+sqlite:///{data_dir / 'broker.db'}"
        _check_broker_url(broker_url)
        smtp_url = get("SMTP_URL")
        base_url = (get("BASE_URL") or "").rstrip("/")
        if base_url:
            _check_base_url(base_url)
        values = dict(
            data_dir=data_dir,
            database_url=_normalise_database_url(database_url),
            broker_url=broker_url,
            smtp=parse_smtp_url(smtp_url) if smtp_url else None,
            outbox=Path(get("OUTBOX") or data_dir / "outbox").expanduser().absolute(),
            base_url_given=bool(base_url),
            secret_key=get("SECRET_KEY") or _local_secret_key(data_dir),
            x=_x_credentials(get),
            allow_private_feeds=_bool(get, "ALLOW_PRIVATE_FEEDS", False),
            link_check=_bool(get, "LINK_CHECK", True),
            durable_sent=_bool(get, "DURABLE_SENT", False),
            dkim=_dkim(get),
            inbound_mail=_bool(get, "INBOUND_MAIL", False),
            inbound_imap=parse_imap_url(imap_url) if (imap_url := get("INBOUND_IMAP_URL")) else None,
            bounce_domain=_bounce_domain(get("BOUNCE_DOMAIN")),
        )
        for name, default in (
            ("feed_timeout", cls.feed_timeout),
            ("feed_max_bytes", cls.feed_max_bytes),
            ("poll_interval", cls.poll_interval),
            ("tick_interval", cls.tick_interval),
            ("batch_size", cls.batch_size),
            ("retry_base", cls.retry_base),
            ("retry_max", cls.retry_max),
            ("give_up_after", cls.give_up_after),
            ("web_port", cls.web_port),
            ("soft_bounce_limit", cls.soft_bounce_limit),
            ("soft_bounce_window", cls.soft_bounce_window),
            ("confirmations_per_address", cls.confirmations_per_address),
            ("confirmations_per_client", cls.confirmations_per_client),
            ("bounce_events_per_hour", cls.bounce_events_per_hour),
            ("claim_timeout", cls.claim_timeout),
            ("inbound_poll_interval", cls.inbound_poll_interval),
            ("inbound_keep", cls.inbound_keep),
        ):
            values[name] = _number(get, name.upper(), type(default), default)
        values["web_host"] = check_web_host(get("WEB_HOST") or cls.web_host, f"{PREFIX}WEB_HOST")
        if values["web_port"] > 65535:
            raise SettingsError(f"{PREFIX}WEB_PORT={values['web_port']} is not a port; use one from 1 to 65535")
        # Unset, links in mail point where the web app listens: `syndicate run --port 18101` mails links
        # to port 18101, not to a default nobody serves.
        values["base_url"] = base_url or served_url(values["web_host"], values["web_port"])
        values["trusted_proxies"] = check_trusted_proxies(get("TRUSTED_PROXIES") or "", f"{PREFIX}TRUSTED_PROXIES")
        if values["claim_timeout"] < SHORTEST_CLAIM:
            raise SettingsError(f"{PREFIX}CLAIM_TIMEOUT={values['claim_timeout']} is too short: a worker waiting "
                                f"on a slow server would lose its claim to another; use {SHORTEST_CLAIM} or more")
        if values["claim_timeout"] > LONGEST_CLAIM:
            raise SettingsError(f"{PREFIX}CLAIM_TIMEOUT={values['claim_timeout']} is too long: a dead worker's rows "
                                f"would wait that long to go out; use at most {LONGEST_CLAIM} (a day)")
        values["send_rate"] = _number(get, "SEND_RATE", float, None)
        values["send_hourly"] = _number(get, "SEND_HOURLY", int, None)
        if postal := get("POSTAL_ADDRESS"):
            from syndicate.text import postal_address  # regex, only where an address is set

            try:
                values["postal_address"] = postal_address(postal)
            except ValueError as e:
                raise SettingsError(f"{PREFIX}POSTAL_ADDRESS: {e}") from None
        if template_dir := get("TEMPLATE_DIR"):
            values["template_dir"] = Path(template_dir).expanduser().absolute()
            if not values["template_dir"].is_dir():
                raise SettingsError(f"{PREFIX}TEMPLATE_DIR={template_dir!r} is not a folder; create it, or unset it "
                                    "to use the bundled templates")
        if values["retry_max"] >= 3600 and broker_url.startswith("redis"):
            raise SettingsError(
                f"{PREFIX}RETRY_MAX={values['retry_max']} must stay below Redis's visibility "
                "timeout (3600 s), or a retried task is delivered twice; use a smaller value"
            )
        return cls(**values)


def parse_smtp_url(url: str) -> SmtpSettings:
    """smtp://host[:25] plain, smtp+starttls://host[:587], smtps://host[:465]; user:pass@ for auth."""
    parts = urlsplit(url)
    schemes = {"smtp": ("none", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}
    if parts.scheme not in schemes or not parts.hostname:
        raise SettingsError(
            f"{PREFIX}SMTP_URL={_redact(url)!r} is not understood; use smtp://HOST:PORT, "
            "smtp+starttls://USER:PASSWORD@HOST:587 or smtps://USER:PASSWORD@HOST:465"
        )
    security, default_port = schemes[parts.scheme]
    query = parse_qs(parts.query)
    try:
        port = parts.port or default_port
        timeout = float(query.get("timeout", ["30"])[0])
    except ValueError as e:
        raise SettingsError(f"{PREFIX}SMTP_URL={_redact(url)!r}: {e}") from e
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=timeout,
    )


IMAP_SCHEMES = {"imaps": ("tls", 993), "imap+starttls": ("starttls", 143), "imap": ("none", 143)}


def parse_imap_url(url: str) -> ImapSettings:
    """imaps://USER:PASSWORD@HOST[:993]/FOLDER[?done=FOLDER], imap+starttls://…:143; imap:// (no TLS) only
    to this machine. Handled mail is moved to `done`, or deleted when none is given."""
    parts = urlsplit(url)
    example = "imaps://USER:PASSWORD@HOST:993/INBOX?done=Processed"
    if parts.scheme not in IMAP_SCHEMES or not parts.hostname:
        raise SettingsError(f"{PREFIX}INBOUND_IMAP_URL={_redact(url)!r} is not understood; use {example} "
                            "(or imap+starttls://… on port 143)")
    if not parts.username or parts.password is None:
        raise SettingsError(f"{PREFIX}INBOUND_IMAP_URL={_redact(url)!r} has no user and password; use {example}")
    security, default_port = IMAP_SCHEMES[parts.scheme]
    if security == "none" and not _loopback(parts.hostname):
        raise SettingsError(f"{PREFIX}INBOUND_IMAP_URL={_redact(url)!r} would send the mailbox's password "
                            f"unencrypted to {parts.hostname}; use imaps:// or imap+starttls://")
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"done", "timeout"})
    if unknown:
        raise SettingsError(f"{PREFIX}INBOUND_IMAP_URL={_redact(url)!r}: unknown option {unknown[0]!r}; the "
                            "options are done=FOLDER (where handled mail goes) and timeout=SECONDS")
    try:
        port = parts.port or default_port
        timeout = float(query.get("timeout", ["30"])[0])
    except ValueError as e:
        raise SettingsError(f"{PREFIX}INBOUND_IMAP_URL={_redact(url)!r}: {e}") from e
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    done = query.get("done", [""])[0].strip() or None
    if done == folder:
        raise SettingsError(f"{PREFIX}INBOUND_IMAP_URL={_redact(url)!r}: done={done} is the folder it reads; "
                            "name another folder, or leave done out to delete handled mail")
    return ImapSettings(host=parts.hostname, port=port, security=security, username=unquote(parts.username),
                        password=unquote(parts.password), folder=folder, done=done, timeout=timeout)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bounce_domain(value: str | None) -> str | None:
    if value is None:
        return None
    domain = value.lower().rstrip(".")
    if not domain.isascii() or not DNS_NAME.fullmatch(domain) or "." not in domain:
        raise SettingsError(f"{PREFIX}BOUNCE_DOMAIN={value!r} is not a domain name; give the domain whose mail "
                            "reaches syndicate, e.g. bounces.example.com (an internationalised name in its xn-- "
                            "form), or unset it to use each newsletter's From domain")
    return domain


def _redact(url: str) -> str:
    """Hide whatever stands between a ':' and the last '@', however malformed the URL."""
    userinfo, at, host = url.rpartition("@")
    if not at:
        return url
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/{1,2}", userinfo)
    prefix = scheme.group(0) if scheme else ""
    user = userinfo[len(prefix):].split(":", 1)[0]
    return f"{prefix}{user}:***@{host}"


def _check_database_url(url: str) -> None:
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        raise SettingsError(
            f"{PREFIX}DATABASE_URL={_redact(url)!r} is not supported; use sqlite:///PATH "
            "or postgresql://USER@HOST/DB"
        )


def _normalise_database_url(url: str) -> str:
    # The only PostgreSQL driver we declare is psycopg 3.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _check_broker_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "sqla+sqlite:", "sqla+postgresql", "amqp://")):
        raise SettingsError(
            f"{PREFIX}BROKER_URL={_redact(url)!r} is not supported; use redis://HOST:6379/0 "
            "(or leave it unset for the embedded broker)"
        )


def check_trusted_proxies(value: str, where: str) -> str:
    """Comma-separated addresses or networks (10.0.0.5, 172.16.0.0/12, ::1), or * for any: the proxies
    whose X-Forwarded-For is believed. A typo must not quietly trust nobody, or everybody."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(f"{where}={value!r}: {entry!r} is not an IP address or network; list the "
                                "reverse proxy's addresses, e.g. 127.0.0.1,172.16.0.0/12") from None
    return ",".join(entries)


WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")
WEB_HOST = re.compile(r"[A-Za-z0-9._-]+|\[?[0-9A-Fa-f:.]+\]?")


def check_web_host(value: str, where: str) -> str:
    """A name or an IP address to listen on, nothing else: it also becomes the host of mailed links when
    SYNDICATE_BASE_URL is unset, where a space, a slash or an @ would make another address."""
    if not WEB_HOST.fullmatch(value):
        raise SettingsError(f"{where}={value!r} is not a host name or IP address; use e.g. 127.0.0.1, "
                            "0.0.0.0 (every address) or news.example.org")
    return value


def served_url(host: str, port: int) -> str:
    """The address a browser on this machine reaches the web app at. A wildcard listens everywhere but
    is no address to visit: links then name this machine's loopback (`describe_base_url` says so)."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{port}"


def describe_base_url(settings: Settings, host: str, port: int) -> list[str]:
    """What `run` says at start about the links mails will carry, next to where it serves: an operator who
    moved the port, or serves behind a name, sees at once whether readers' links will reach it."""
    serving = f"http://{'[' + host + ']' if ':' in host and not host.startswith('[') else host}:{port}"
    lines = [f"web:    {serving}/"]
    if settings.base_url_given:
        lines.append(f"links:  mails will carry links to {settings.base_url}/ ({PREFIX}BASE_URL); "
                     f"serving on {serving}/")
        if served_url(host, port) != settings.base_url:
            lines.append(f"        (the two differ: right behind a proxy or a name; otherwise unset {PREFIX}"
                         "BASE_URL, or set it to the address readers reach)")
        return lines
    lines.append(f"links:  mails will carry links to {settings.base_url}/ (where the web app listens; "
                 f"{PREFIX}BASE_URL is unset)")
    if host in WILDCARD_HOSTS:
        lines.append(f"        {host} is every address, so links name this machine as 127.0.0.1: set "
                     f"{PREFIX}BASE_URL to the address readers reach, e.g. https://news.example.org")
    return lines


def _check_base_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(
            f"{PREFIX}BASE_URL={url!r} must be an absolute http(s) URL, e.g. https://news.example.com"
        )


def _bool(get, name: str, default: bool) -> bool:
    value = get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{PREFIX}{name}={value!r} must be one of 1/0, true/false, yes/no, on/off")


def _number(get, name: str, kind: type, default):
    value = get(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{PREFIX}{name}={value!r} must be {expected}") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingsError(f"{PREFIX}{name}={value!r} must be greater than 0")
    return number


def _x_credentials(get) -> XCredentials | None:
    values = {key: get(key) for key in X_KEYS}
    present = [key for key, value in values.items() if value]
    if not present:
        return None
    missing = [PREFIX + key for key in X_KEYS if not values[key]]
    if missing:
        raise SettingsError(
            f"X credentials are incomplete: set {', '.join(missing)} too, "
            f"or unset {', '.join(PREFIX + key for key in present)} to run in dry-run"
        )
    return XCredentials(*(values[key] for key in X_KEYS))


DNS_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*", re.I)


def _dkim(get) -> DkimSettings | None:
    """All three or nothing, checked now: the key is loaded and signs once before any mail waits on it."""
    key_file, selector, domain = get("DKIM_KEY_FILE"), get("DKIM_SELECTOR"), get("DKIM_DOMAIN")
    if not key_file:
        if selector or domain:
            given = PREFIX + ("DKIM_SELECTOR" if selector else "DKIM_DOMAIN")
            raise SettingsError(f"{given} is set but {PREFIX}DKIM_KEY_FILE is not: set it to the path of the DKIM "
                                f"private key (PEM) to sign mail, or unset {given}")
        return None
    if not selector:
        raise SettingsError(f"{PREFIX}DKIM_KEY_FILE is set but {PREFIX}DKIM_SELECTOR is not: set it to the selector "
                            f"under which the public key is published (the s1 of s1._domainkey.example.com), "
                            f"or unset {PREFIX}DKIM_KEY_FILE to send unsigned mail")
    if "._domainkey" in selector.lower() or not DNS_NAME.fullmatch(selector):
        raise SettingsError(f"{PREFIX}DKIM_SELECTOR={selector!r} is not a selector; give the selector alone, "
                            "e.g. s1 for the record at s1._domainkey.example.com")
    if domain is not None:
        domain = domain.lower().rstrip(".")
        if not domain.isascii() or not DNS_NAME.fullmatch(domain):
            raise SettingsError(f"{PREFIX}DKIM_DOMAIN={domain!r} is not a domain name; give one like example.com "
                                "(an internationalised name in its xn-- form), or unset it to sign as each "
                                "newsletter's From domain")
    # dkimpy imports dnspython (0.15 s at every start): only where mail is signed.
    from syndicate.mail.dkim import DkimSettings, load_key

    path = Path(key_file).expanduser().absolute()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SettingsError(f"{PREFIX}DKIM_KEY_FILE={key_file!r} cannot be read ({e.strerror}); check the path "
                            "and that syndicate's user may read the file") from e
    try:
        key = load_key(data)
    except ValueError as e:
        raise SettingsError(f"{PREFIX}DKIM_KEY_FILE={key_file!r} {e}; make a key with `openssl genrsa -out "
                            "dkim.pem 2048` (or `openssl genpkey -algorithm ed25519 -out dkim.pem`)") from e
    return DkimSettings(key_file=path, selector=selector, domain=domain, key=key)


def _local_secret_key(data_dir: Path) -> str:
    """On one machine, keep a generated key in the data folder so links survive restarts."""
    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # Write aside, then link into place: readers never see a half-written key,
    # and if two processes start at once the first link wins for both.
    tmp = data_dir / f".secret_key.{os.getpid()}"
    private_files.write(tmp, secrets.token_urlsafe(32).encode())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
