"""One root error; each subclass says what went wrong and what to do about it."""


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

    def __init__(self, message: str, *, permanent: bool, code: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class ConnectionLost(TransportError):
    """The mail server went away or asked us to slow down (421): the rest of the batch waits."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message, permanent=False, code=code)
