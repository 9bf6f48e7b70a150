"""One root error; each subclass says what went wrong and what to do about it."""

from datetime import datetime


class SyndicateError(Exception):
    """Base of every error syndicate raises on purpose."""


class SettingsError(SyndicateError):
    """A SYNDICATE_* variable is missing or malformed."""


class FeedError(SyndicateError):
    """A feed could not be fetched or parsed; the feed keeps what it had."""


class NotFound(SyndicateError):
    """A thing named by the user does not exist."""


class InvalidInput(SyndicateError):
    """Input from a form, a file or the command line was rejected."""


class TransportError(SyndicateError):
    """Sending (mail or post) failed; `permanent` decides between retry and give up."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None,
                 retry_at: datetime | None = None, recipient: bool = False, uncertain: bool = False,
                 throttled: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        self.retry_at = retry_at  # the earliest time the other side said to try again
        self.recipient = recipient  # refused the address itself (SMTP RCPT), not the message
        # The recipient's domain asks us to slow down (a 4.7.x in reply to this one recipient): pacing.Domain
        self.throttled = throttled
        # The request may have reached the other side before it failed (no answer, or the line dropped
        # mid-answer): a later "duplicate" refusal may be this attempt having worked.
        self.uncertain = uncertain

    @property
    def bounce(self) -> bool:
        """A hard bounce: the address doesn't take mail. 552 (mailbox full) is treated as soft."""
        return self.permanent and self.recipient and self.code != 552


class DuplicatePost(TransportError):
    """The network already has this exact text from us: posted earlier, or by someone else."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True, code=403)


class AccountProblem(TransportError):
    """The network refuses the account itself (revoked token, missing permission, suspension, a login it
    won't take): every post would fail the same way, so the account is paused with this message, which
    says what is wrong and what to do."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message, permanent=True, code=code)


class ConnectionLost(TransportError):
    """The mail server went away or asked us to slow down (421): the rest of the batch waits."""

    def __init__(self, message: str, code: int | None = None, throttled: bool = False):
        super().__init__(message, permanent=False, code=code, throttled=throttled)
