"""An edition checked before it goes, on the message exactly as a recipient gets it: the gate every path
that starts a send passes (desk, CLI, API, the tick). What blocks: a reader who can't leave, HTML Gmail
clips, a story whose page is gone, a text part that lost a link of the HTML part. An editor may let a check
pass for one edition, saying why; the rest are warnings that never block (a long subject, a story link that
couldn't be checked, a story image too heavy for a phone or gone). And, on an editor's demand, every link of
an edition asked."""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from urllib.parse import urldefrag, urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery.copies import preview
from syndicate.errors import FeedError, InvalidInput
from syndicate.ingest import fetch
from syndicate.models import Edition, LinkCheck, utcnow
from syndicate.newsletters.rendering import GMAIL_CLIPS_AT
from syndicate.text import one_line

MAX_LINKS = 100  # checked per request; an edition with more says how many were left out
WORKERS = 8  # links asked at once
DEADLINE = 10.0  # seconds for the whole check: an editor waits for it

# The checks that stop an edition, and what each makes sure of (the names an override gives).
BLOCKING = {
    "unsubscribe": "a reader can leave: a one-click List-Unsubscribe header and the link in both parts",
    "size": f"the HTML as sent is under Gmail's {GMAIL_CLIPS_AT // 1024} KB clip",
    "links": "no story's page is gone (its server answered 404 or 410)",
    "text-links": "the text part carries every link of the HTML part",
}
# Only these say for sure that a page is gone. A 403 is often a wall against robots, a 401 a paywall, a 429
# or a 5xx a busy server for a minute: each is told to the editor, and never blocks.
GONE = (404, 410)
ANSWER_KEPT = timedelta(minutes=30)  # a link's answer is asked again after this
NO_ANSWER_KEPT = timedelta(minutes=5)  # no answer (DNS, timeout, refused) is tried again sooner
LONG_SUBJECT = 90  # characters; phones show about 40 of a subject, desktops about 70
# bytes: a photo straight from a site's CMS (often 2-5 MB) that a reader on a phone's data waits for, and that
# some mail programs leave as an empty frame until it has all come; mail designers keep an image under this
HEAVY_IMAGE = 1_000_000
NAMED = 10  # links named in one warning; the rest counted


def parts(message: EmailMessage) -> tuple[str, str]:
    """The HTML and text parts of a message."""
    html, text = (message.get_body(preferencelist=(kind,)) for kind in ("html", "plain"))
    return (html.get_content() if html else ""), (text.get_content() if text else "")


def message_checks(settings: Settings, edition: Edition) -> tuple[list[dict], list[str]]:
    """What the message as sent would do in readers' inboxes: (blocking findings, warnings)."""
    if not edition.html:
        return [], []
    template = edition.newsletter.template
    message = preview(settings, edition.newsletter, edition)
    html, text = parts(message)
    found, warned = [], []
    size = len(html.encode())
    if size > GMAIL_CLIPS_AT:
        found.append(dict(check="size", message=(
            f"the HTML is {size / 1024:.0f} KB as sent: Gmail clips messages over {GMAIL_CLIPS_AT // 1024} KB "
            "and hides the rest, unsubscribe link included; remove stories or shorten leads")))
    # The reader's own unsubscribe link is the https one of the List-Unsubscribe header; it must be in
    # both parts too, for mail programs that don't offer the header's button.
    listed = re.findall(r"<(https?://[^>]+)>", message.get("List-Unsubscribe", ""))
    if not listed or "List-Unsubscribe-Post" not in message:
        found.append(dict(check="unsubscribe", message="the message has no one-click List-Unsubscribe "
                          "header: Gmail and Yahoo require it of bulk senders"))
    for body, kind, name in ((html, "HTML", "body.html"), (text, "text", "body.txt")):
        if not listed or listed[0] not in body:
            found.append(dict(check="unsubscribe", message=f"the {kind} part has no unsubscribe link: put "
                              f"{{{{ unsubscribe_url }}}} in email/{template}/{name}"))
    if missing := [url for url in links(html, settings, own=True) if url not in text]:
        found.append(dict(check="text-links", message=(
            f"the text part lacks {len(missing)} link(s) of the HTML part ({_named(missing)}): readers of "
            f"plain text can't reach them; add them to email/{template}/body.txt")))
    if len(edition.subject) > LONG_SUBJECT:
        warned.append(f"the subject is {len(edition.subject)} characters: phones show about 40 and desktops "
                      "about 70 of it; put what matters first")
    return found, warned


def warnings(settings: Settings, edition: Edition) -> list[str]:
    """What would hurt this edition in readers' inboxes, measured on the message as sent, blocking or not.
    (Edition.warnings holds the render's own measure of the stored HTML; this one stands in for it on the desk.)"""
    found, warned = message_checks(settings, edition)
    return [f["message"] for f in found] + warned


# ── the gate ─────────────────────────────────────────────────────────────────


@dataclass
class Review:
    blocking: list[dict]  # {check, message}: what stops the edition
    overridden: list[dict]  # what would, but an editor let it pass
    warnings: list[str]  # never stop it
    at: datetime

    def as_json(self) -> dict:
        return dict(at=self.at.isoformat(), blocking=self.blocking, overridden=self.overridden,
                    warnings=self.warnings)


def review(session: Session, settings: Settings, edition: Edition, now: datetime | None = None,
           ask: bool = True) -> Review:
    """Every check of the edition as it would go now. Story links are asked (unless `ask` is False or
    SYNDICATE_LINK_CHECK is off: then only the answers remembered count), each remembered a while."""
    now = now or utcnow()
    found, warned = message_checks(settings, edition)
    gone, unsure = story_links(session, settings, edition, now, ask)
    found += gone
    warned += [*unsure, *(edition.warnings or [])]
    let_pass = {o["check"] for o in edition.overrides or []}
    return Review(blocking=[f for f in found if f["check"] not in let_pass],
                  overridden=[f for f in found if f["check"] in let_pass], warnings=warned, at=now)


def gate(session: Session, settings: Settings, edition: Edition, now: datetime | None = None,
         ask: bool = True) -> Review:
    """review, and its word kept on the edition for the editors (`edition show`, the desk)."""
    found = review(session, settings, edition, now, ask)
    edition.checks = found.as_json()
    return found


def blocked_because(edition: Edition, found: Review) -> str:
    """The note of a blocked edition: what stopped it and the two ways on."""
    checks = sorted({f["check"] for f in found.blocking})
    return (f"blocked by the pre-send checks: {'; '.join(f['message'] for f in found.blocking)}. Fix it and "
            f"schedule it again, or let a check pass: syndicate edition schedule {edition.newsletter.slug}/"
            f"{edition.number} --at TIME --override {' --override '.join(checks)} --reason WHY")


def override(edition: Edition, checks: list[str], reason: str, by: str, now: datetime | None = None) -> None:
    """Let these checks pass for this edition, with who and why kept for later."""
    if unknown := [c for c in checks if c not in BLOCKING]:
        raise InvalidInput(f"no check {', '.join(map(repr, unknown))} to override; the checks are "
                           f"{', '.join(BLOCKING)}")
    reason = one_line(reason or "")[:500]
    if not reason:
        raise InvalidInput("say why the check may pass (--reason): it is kept with the edition for later")
    now = now or utcnow()
    edition.overrides = [*(edition.overrides or []),
                         *(dict(check=c, reason=reason, by=by, at=now.isoformat()) for c in dict.fromkeys(checks))]


# ── story links: gone, or not known ──────────────────────────────────────────


def story_links(session: Session, settings: Settings, edition: Edition, now: datetime,
                ask: bool = True) -> tuple[list[dict], list[str]]:
    """(blocking findings for stories whose page is gone, warnings for those that couldn't be checked or
    answered an error that may pass, and for the edition's images that are heavy or gone)."""
    urls = list(dict.fromkeys(item.article.url for item in edition.items
                              if urlsplit(item.article.url or "").scheme in ("http", "https")))
    pictures = [u for u in images(edition.html or "", settings) if u not in urls]
    if not urls and not pictures:
        return [], []
    answers = remembered(session, urls + pictures, now)
    if ask and settings.link_check and (wanted := [u for u in urls + pictures if u not in answers]):
        asked = ask_links(settings, wanted)
        remember(session, asked, now)
        answers |= asked
    gone = [u for u in urls if answers.get(u, {}).get("status") in GONE]
    shaky = [u for u in urls if u in answers and u not in gone and answers[u].get("status") not in range(200, 400)]
    found = [dict(check="links", message=f"the story at {u} is gone (its server answered "
                  f"{answers[u]['status']}): take it out of the edition") for u in gone]
    warned = [f"could not check {u}: {answers[u]['error'] or 'answered ' + str(answers[u]['status'])}; "
              "it doesn't block" for u in shaky[:NAMED]]
    if len(shaky) > NAMED:
        warned.append(f"… and {len(shaky) - NAMED} more story links that could not be checked")
    return found, warned + _image_warnings(pictures, answers)


def _image_warnings(pictures: list[str], answers: dict[str, dict]) -> list[str]:
    heavy = [(u, answers[u]["size"]) for u in pictures
             if u in answers and (answers[u].get("size") or 0) > HEAVY_IMAGE]
    warned = [f"the image {u} weighs {size / 1_000_000:.1f} MB: a reader on a phone's data waits for it, and "
              "some mail programs show an empty frame until it has come; a smaller size of it (most sites "
              "have one) would do; it doesn't block" for u, size in heavy[:NAMED]]
    if len(heavy) > NAMED:
        warned.append(f"… and {len(heavy) - NAMED} more images over {HEAVY_IMAGE / 1_000_000:.0f} MB")
    missing = [u for u in pictures if answers.get(u, {}).get("status") in GONE]
    warned += [f"the image {u} is gone (its server answered {answers[u]['status']}): readers see an empty "
               "frame; it doesn't block" for u in missing[:NAMED]]
    return warned


def ask_ahead(sessions: sessionmaker, settings: Settings, urls: list[str], now: datetime) -> int:
    """Ask the links a tick is about to check, with no transaction open, and remember the answers: the gate,
    which runs inside the cut's transaction, then finds them fresh. Asked in there, a slow site would hold
    the database's write lock (all of it, on SQLite) for up to DEADLINE seconds while every other writer
    waits. Returns how many were asked."""
    urls = [u for u in dict.fromkeys(urls) if urlsplit(u or "").scheme in ("http", "https")]
    if not settings.link_check or not urls:
        return 0
    with transaction(sessions) as session:
        wanted = [u for u in urls if u not in remembered(session, urls, now)]
    if not wanted:
        return 0
    asked = ask_links(settings, wanted)
    with transaction(sessions) as session:
        remember(session, asked, now)
    return len(asked)


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def remembered(session: Session, urls: list[str], now: datetime) -> dict[str, dict]:
    """The answers still fresh of these links: url → {status, error, size}."""
    rows = session.scalars(select(LinkCheck).where(LinkCheck.key.in_([_key(u) for u in urls])))
    fresh = {}
    for row in rows:
        kept = ANSWER_KEPT if row.status is not None else NO_ANSWER_KEPT
        if row.checked_at > now - kept:
            fresh[row.url] = dict(status=row.status, error=row.error, size=row.size)
    return fresh


def remember(session: Session, answers: dict[str, dict], now: datetime) -> None:
    """Keep these answers; a row another process wrote meanwhile is overwritten (one statement, no race)."""
    if not answers:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    rows = [dict(key=_key(u), url=u, status=a["status"], error=(a["error"] or "")[:500] or None,
                 size=a.get("size"), checked_at=now) for u, a in answers.items()]
    statement = insert(LinkCheck).values(rows)
    session.execute(statement.on_conflict_do_update(index_elements=["key"], set_=dict(
        url=statement.excluded.url, status=statement.excluded.status, error=statement.excluded.error,
        size=statement.excluded.size, checked_at=statement.excluded.checked_at)))


def ask_links(settings: Settings, urls: list[str], deadline: float = DEADLINE) -> dict[str, dict]:
    """Each link's answer: {status (the last one, after redirects) or None, error, size (its Content-Length)
    or None}. Through fetch's guarded client, so never an address on our own network unless
    SYNDICATE_ALLOW_PRIVATE_FEEDS is set."""
    return _ask(settings, urls, deadline)


def _named(urls: list[str]) -> str:
    return ", ".join(urls[:NAMED]) + (f" and {len(urls) - NAMED} more" if len(urls) > NAMED else "")


# ── do the links answer? ─────────────────────────────────────────────────────


@dataclass
class LinkReport:
    checked: int = 0
    broken: list[dict] = field(default_factory=list)  # url, status (the final one) or error
    left_out: int = 0  # beyond MAX_LINKS


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []  # <a href>
        self.images: list[str] = []  # <img src>

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        if tag == "a" and named.get("href"):
            self.found.append(named["href"].strip())
        elif tag == "img" and named.get("src"):
            self.images.append(named["src"].strip())


def links(html: str, settings: Settings, own: bool = False) -> list[str]:
    """The distinct http(s) links of an edition, in order; not our own pages (the reader's personal
    links, and a web view that exists only once the edition goes out) unless `own`."""
    parser = _Links()
    parser.feed(html)
    return _web(settings, [urldefrag(href)[0] for href in parser.found], own)


def images(html: str, settings: Settings) -> list[str]:
    """The distinct http(s) images of an edition, in order; not our own."""
    parser = _Links()
    parser.feed(html)
    return _web(settings, parser.images, own=False)


def _web(settings: Settings, urls: list[str], own: bool) -> list[str]:
    """The distinct http(s) ones of `urls`, in order; those on our own base URL only if `own`."""
    base = settings.base_url.rstrip("/")
    return list(dict.fromkeys(url for url in urls if urlsplit(url).scheme.lower() in ("http", "https")
                              and (own or not (url == base or url.startswith(base + "/")))))


def check_links(settings: Settings, edition: Edition, deadline: float = DEADLINE) -> LinkReport:
    """Ask every link of the edition as sent, a few at once, all within `deadline` seconds; report those
    that answer 4xx/5xx, can't be reached, or don't answer in time. Through fetch's guarded client:
    addresses on our own network are refused unless SYNDICATE_ALLOW_PRIVATE_FEEDS is set."""
    html, _ = parts(preview(settings, edition.newsletter, edition)) if edition.html else ("", "")
    urls = links(html, settings)
    report = LinkReport(checked=min(len(urls), MAX_LINKS), left_out=max(len(urls) - MAX_LINKS, 0))
    for url, answer in _ask(settings, urls[:MAX_LINKS], deadline).items():
        if answer["status"] is None or answer["status"] >= 400:
            report.broken.append(dict(url=url, status=answer["status"], error=answer["error"]))
    return report


def _ask(settings: Settings, urls: list[str], deadline: float) -> dict[str, dict]:
    """Ask each link, a few at once, all within `deadline` seconds: {status (after redirects; None: no
    answer), error, size}."""
    if not urls:
        return {}
    ends = time.monotonic() + deadline
    http = fetch.client(settings.allow_private_feeds, deadline, httpx.Limits(max_connections=WORKERS))
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="link-check")
    asked = {url: pool.submit(_answer, http, url, ends) for url in urls}
    wait(asked.values(), timeout=deadline + 1)
    pool.shutdown(wait=False, cancel_futures=True)
    http.close()  # a server still dripping its answer is cut off here; its thread's error is not read
    return {url: dict(status=None, error=f"no answer within {deadline:.0f} s", size=None)
            if not future.done() or future.cancelled() else future.result() for url, future in asked.items()}


def _answer(http: httpx.Client, url: str, ends: float) -> dict:
    """The link's status (after redirects) and the size its Content-Length says, or the error that kept it
    from answering. Only the head is read: fetch.guarded_get would read the whole body, and a link may lead
    to a 50 MB file."""
    left = ends - time.monotonic()
    if left <= 0:
        return dict(status=None, error="not asked: the time for the check ran out", size=None)
    try:
        with http.stream("GET", url, follow_redirects=True,
                         timeout=httpx.Timeout(left, connect=min(5.0, left))) as response:
            status, length = response.status_code, response.headers.get("content-length", "")
    except (httpx.HTTPError, httpx.InvalidURL, FeedError) as e:
        return dict(status=None, error=str(e) or type(e).__name__, size=None)
    return dict(status=status, error=None, size=int(length) if length.isdigit() and len(length) < 19 else None)
