"""Files that hold secrets or readers' data — the SQLite databases, the generated secret key, the outbox —
are the owner's alone: files 0600, folders 0700, whatever the umask (a shared host's default 022 would
let every local account read subscriber addresses and the key that signs their unsubscribe links).
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dir(path: Path) -> Path:
    """`path` and any missing folder above it, each created 0700; a folder that exists is left as it is
    (an operator's mounted volume keeps the mode they gave it)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it first
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode is cut by the umask; chmod's is not
    return path


def create(path: Path) -> None:
    """An empty file at `path`, 0600, unless there is one: SQLite then keeps the mode, and gives its
    -wal and -shm files the same."""
    make_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write(path: Path, data: bytes) -> None:
    """`data` into `path`, which is 0600 afterwards even if a file of another mode was there."""
    make_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, FILE_MODE)
        f.write(data)
