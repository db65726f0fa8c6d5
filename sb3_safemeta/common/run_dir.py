"""
Run directories that two jobs cannot corrupt and a kill cannot leave half-written.

- :class:`RunLock`: an exclusive lock on an output directory, owned by one run for its whole life.
  A second run on the same directory gets a :class:`RunLockedError` that names the holder (pid, host,
  start time, command). The lock is an ``fcntl.flock`` on ``<dir>/.lock``: the kernel releases it when
  the holder's process ends in any way (``kill -9`` included), so a lock left by a dead process is
  detected as stale and taken over; the record of the dead holder is reported.
- :func:`atomic_path` / :func:`atomic_write_text` / :func:`atomic_write_bytes`: write a file under a
  temporary name unique to the process and the call (``.<name>.<pid>.<random>.tmp<suffix>``, in the same
  folder), flush it to disk, then rename it over the target (``os.replace``, atomic on POSIX and Windows).
  A reader sees the old file or the new one, never a part; a kill during the write leaves at most a
  temporary file, which :func:`remove_stale_temporaries` cleans when the directory's next run starts.

Used by the main job (``python -m sb3_safemeta``), :class:`~sb3_safemeta.common.callbacks.MetaCheckpointCallback`
and :meth:`~sb3_safemeta.common.evaluation.MetaTestReport.save`; any other job that owns a folder can use
it the same way::

    with RunLock(out):
        with atomic_path(out / "model.zip") as temporary:
            model.save(temporary)
        atomic_write_text(out / "result.json", json.dumps(result))
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import secrets
import socket
import sys
from collections.abc import Iterator
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "RunLockedError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temporaries",
    "temporary_name",
]

LOCK_NAME = ".lock"
_TEMPORARY_MARK = ".tmp"


class RunLockedError(RuntimeError):
    """Another live run owns the directory. ``holder`` is its lock record (pid, host, started, argv)."""

    def __init__(self, directory: pathlib.Path, holder: dict[str, Any]) -> None:
        self.directory, self.holder = directory, holder
        super().__init__(
            f"{directory} is in use by another run: pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')} ({' '.join(map(str, holder.get('argv', [])))}). "
            "Wait for it to finish, stop it, or choose another output folder."
        )


def _fsync_directory(directory: pathlib.Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def temporary_name(path: pathlib.Path) -> pathlib.Path:
    """
    :param path: the final file
    :return: a temporary path beside it, unique to this process and call, with the same suffix (SB3's
        ``save`` appends ``.zip`` to a name without one, matplotlib picks the format from it)
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TEMPORARY_MARK}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """
    Yield a temporary path to write ``path`` through; on success it is flushed to disk and renamed over
    ``path``, on an exception it is removed and ``path`` is left as it was.

    :param path: the final file (its folder is created)
    """
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(final)
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_directory(final.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[pathlib.Path]:
    """
    Remove the temporary files that killed writers left in ``directory`` and its sub-folders. Call it
    only while holding the directory's :class:`RunLock` (a live writer's temporary would go too).

    :return: the removed files
    """
    removed = []
    for candidate in pathlib.Path(directory).rglob(f".*{_TEMPORARY_MARK}*"):
        if candidate.is_file():
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def _process_start_time(pid: int) -> str | None:
    """:return: the kernel's start time of ``pid`` (Linux ``/proc``), to tell a pid apart from a reused one"""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class RunLock:
    """
    The exclusive lock of an output directory, held from :meth:`acquire` to :meth:`release` (or the end of
    the process). Use as a context manager. Not re-entrant: a second ``RunLock`` on the same directory in
    the same process is refused like any other run.

    :param directory: the output folder (created)
    :param argv: the command recorded in the lock (default ``sys.argv``)
    """

    def __init__(self, directory: str | os.PathLike[str], argv: list[str] | None = None) -> None:
        self.directory = pathlib.Path(directory)
        self.path = self.directory / LOCK_NAME
        self.argv = list(sys.argv if argv is None else argv)
        self._fd: int | None = None
        # the record of a dead run whose lock this one took over (None: the directory was free)
        self.stale_holder: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def read_holder(self) -> dict[str, Any]:
        """:return: the record in the lock file (empty if none or unreadable)"""
        try:
            record = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def acquire(self) -> RunLock:
        """
        Take the lock or raise :class:`RunLockedError` naming the live holder.

        :return: self
        """
        if self._fd is not None:
            raise RuntimeError(f"this RunLock already holds {self.path}")
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._lock(fd)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(self.directory, self.read_holder()) from None
            except BaseException:
                os.close(fd)
                raise
            # the previous holder may have removed the file between our open and our lock: then we locked
            # an orphan inode, and another run may lock the new file. Retry on the file now at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self.read_holder()
        self.stale_holder = previous or None  # a record without a live lock: its run died without releasing
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "process_start": _process_start_time(os.getpid()),
            "argv": self.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    @staticmethod
    def _lock(fd: int) -> None:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows: lock the first byte
            import msvcrt

            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError as error:
                raise BlockingIOError(str(error)) from error

    def release(self) -> None:
        """Clear the record and release the lock (the lock file stays: removing it would race a new run)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
