"""How a message reaches a mail server, whichever it is: a message ready for the wire (`Outgoing`), and the
connection and transport every sender (SMTP, the outbox folder) provides."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Outgoing:
    """A message ready for the wire: envelope plus the exact bytes."""

    sender: str
    recipient: str
    data: bytes
    message_id: str
    # CRLF line ends only and no line starting with ".": DATA carries it as it is (RFC 5321 §4.5.2,
    # "transparency"), with no 64 KB scan per message to find out. PreparedMessage's messages say so.
    transparent: bool = False


class Connection(Protocol):
    def send(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None = None,
             while_waiting: Callable[[], None] | None = None) -> str:
        """Hand one message over; return the server's reply, raise TransportError if refused.

        `before_end` runs once the server has taken the recipient and is ready for the message, and
        before the message is ended: the last moment to hold it back. If it raises, the message is
        abandoned, never delivered, and the exception goes up (the connection is not used again).
        It may return the message that will be sent next: a connection that pipelines announces it
        with this one's end, and then the next `send` on it must be that message.

        `while_waiting` runs once the message is ended, before its reply is read: work that overlaps the
        server's (the batch prepares the message after next). It must not raise; if it does, the reply is
        never read and the connection is not used again."""


class Transport(Protocol):
    def connect(self) -> Iterator[Connection]: ...
