"""The outbox folder: each message written, byte for byte as SMTP would carry it, to a .eml file."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from syndicate import private_files
from syndicate.mail.transport import Outgoing


class OutboxConnection:
    def __init__(self, folder: Path):
        self.folder = folder

    def send(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None = None,
             while_waiting: Callable[[], None] | None = None) -> str:
        name = re.sub(r"[^A-Za-z0-9._@-]+", "_", message.message_id.strip("<>"))
        path = self.folder / f"{name}.eml"
        tmp = path.with_suffix(".tmp")
        private_files.write(tmp, message.data)  # readers' addresses and their unsubscribe links
        if before_end is not None:
            try:
                before_end()
            except BaseException:
                tmp.unlink()
                raise
        tmp.replace(path)  # a reader never sees half a message
        if while_waiting is not None:
            while_waiting()
        return f"250 written to {path}"


class OutboxTransport:
    """Writes each message, byte for byte as SMTP would carry it, to a .eml file."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def connect(self) -> Iterator[OutboxConnection]:
        private_files.make_dir(self.folder)
        yield OutboxConnection(self.folder)
