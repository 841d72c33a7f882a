"""Atomic file writes (a reader never sees a half-written file) and the lock on an output folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gencond.errors import GencondError

_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_tree(path: str | Path, recursive: bool = True) -> None:
    """Flush a file, or a folder and (``recursive``) everything under it, to the disk, so
    that a rename that follows never exposes data still in the page cache after a crash.
    Folders cannot be opened for fsync on every system (Windows): skipped there."""
    path = Path(path)
    paths = [path, *(path.rglob("*") if recursive and path.is_dir() else [])]
    for item in paths:
        try:
            fd = os.open(item, os.O_RDONLY)
        except (IsADirectoryError, PermissionError):
            continue
        try:
            os.fsync(fd)
        except OSError:  # e.g. a folder on a file system without directory fsync
            pass
        finally:
            os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        fsync_tree(tmp)
        os.replace(tmp, path)
        fsync_tree(path.parent, recursive=False)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def output_lock(directory: str | Path) -> Iterator[Path]:
    """Hold ``directory/.lock`` for the block, so a second run pointed at the same output
    folder refuses with one line instead of interleaving its writes. The lock is an
    advisory ``flock``: the kernel drops it when the holder exits, even by kill -9, so
    it never goes stale. (No lock where ``fcntl`` does not exist, e.g. Windows.)"""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    try:
        import fcntl
    except ImportError:
        yield path
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise GencondError(f"{directory} is in use by another run ({holder}); "
                               "wait for it or choose another output_dir") from None
        except OSError:  # a file system without flock (some network mounts): run unlocked
            yield path
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
