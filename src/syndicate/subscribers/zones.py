"""A reader's time zone: an IANA name the tz database knows (Europe/Berlin), for a newsletter sent at each
reader's local time (delivery.waves). Chosen on the preferences page, or guessed at sign-up by the browser."""

from __future__ import annotations

from functools import cache
from zoneinfo import available_timezones

from syndicate.errors import InvalidInput

OWN = "own"  # what a form sends for no zone of one's own (an empty field reaches a route as no field at all)


@cache
def names() -> tuple[str, ...]:
    """Every zone a reader can choose, sorted; not the legacy aliases of the database's "backward" file
    (US/Eastern, GB) and not the POSIX ones (EST5EDT): each still has a modern name."""
    return tuple(sorted(z for z in available_timezones()
                        if "/" in z and not z.startswith(("Etc/", "SystemV/", "US/", "posix", "right/"))
                        or z == "UTC"))


@cache
def _known() -> frozenset[str]:
    # Read once: available_timezones() walks the tz database on disk at every call, and an import checks
    # each of its rows.
    return frozenset(available_timezones())


def checked(value: str | None) -> str | None:
    """A zone as a reader gave it: "" or OWN is none (each newsletter's own zone); an unknown one is refused."""
    value = (value or "").strip()
    if not value or value == OWN:
        return None
    if value in _known():  # the names offered, and the older ones a browser may still say (Asia/Calcutta)
        return value
    raise InvalidInput(f"{value[:64]!r} is not a time zone we know; choose one from the list, e.g. Europe/Berlin "
                       "or America/New_York (or none, for each newsletter's own time)")


def guessed(value: str | None) -> str | None:
    """The zone a browser said at sign-up, or None: a guess nobody typed never refuses a sign-up."""
    try:
        return checked(value)
    except InvalidInput:
        return None
