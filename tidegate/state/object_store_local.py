"""LocalObjectStore: objects as files under a directory, each put atomic and durable.

This is the ``fs`` store, the embedded default (SSTs under the data dir). It is
written in Python rather than taken from OpenDAL's ``fs`` service because that
service (checked with strace on opendal 0.47) writes in place with ``O_TRUNC``
by default, so a crash mid-write leaves a partial object; with its
``atomic_write_dir`` option it writes a temporary, fsyncs it and renames it, but
never fsyncs the directory, so the rename itself may be lost on power failure.

A put here: write ``<root>/.tmp/<pid>-<random>``, fsync it, rename it over
``<root>/<path>`` (atomic on POSIX within one file system), fsync the target
directory. A reader therefore sees the old object or the new one, never a
prefix; a writer killed mid-put leaves only a temporary, which ``list`` never
shows and which the next ``LocalObjectStore`` on the same root removes once its
writer's pid is gone. Directories are created as needed, each new one made
durable by fsyncing its parent.

Limits: the file system is the arbiter, so ``a`` and ``a/b`` cannot both be
objects (S3 allows it; tidegate's layout never needs it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from tidegate.state.object_store_base import (
    RESERVED_TOP_LEVEL,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    check_path,
    check_prefix,
    check_range,
)

# OS errors that trying again will not fix; anything else (EIO, EINTR, ...) counts as transient.
_PERMANENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}
    | {errno.EISDIR, errno.ENOTDIR}
)


class LocalObjectStore(ObjectStore):
    """Objects as files under ``root``; see the module docstring for the write protocol."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._temporary_dir = self.root / RESERVED_TOP_LEVEL
        try:
            self._temporary_dir.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)
        except OSError as e:
            raise _wrap("open", str(self.root), e) from e
        self._remove_dead_writers_temporaries()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # ---- the ObjectStore protocol -------------------------------------------------------------------------------
    def put(self, path: str, data: bytes) -> None:
        check_path("put", path)
        target = self.root / path
        temporary = self._temporary_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._make_parents(target.parent)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, target)
            _fsync_dir(target.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise _wrap("put", path, e) from e

    def get(self, path: str) -> bytes:
        check_path("get", path)
        try:
            with open(self.root / path, "rb") as f:
                return f.read()
        except OSError as e:
            raise _wrap("get", path, e) from e

    def get_range(self, path: str, start: int, length: int) -> bytes:
        check_path("get_range", path)
        check_range(path, start, length)
        try:
            fd = os.open(self.root / path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                check_range(path, start, length, os.fstat(fd).st_size)
                chunks: list[bytes] = []
                done = 0
                while done < length:
                    chunk = os.pread(fd, length - done, start + done)
                    if not chunk:
                        # The file shrank under us: only a foreign writer can do that.
                        raise ObjectStoreError("get_range", path, f"short read at offset {start + done}")
                    chunks.append(chunk)
                    done += len(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)
        except OSError as e:
            raise _wrap("get_range", path, e) from e

    def size(self, path: str) -> int:
        check_path("size", path)
        try:
            status = os.stat(self.root / path)
        except OSError as e:
            raise _wrap("size", path, e) from e
        if not _is_regular(status.st_mode):
            raise ObjectNotFound("size", path, "a directory, not an object")
        return status.st_size

    def delete(self, path: str) -> None:
        check_path("delete", path)
        target = self.root / path
        try:
            os.unlink(target)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as e:
            raise _wrap("delete", path, e) from e
        try:
            _fsync_dir(target.parent)
        except OSError as e:
            raise _wrap("delete", path, e) from e

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        # Walk only the deepest directory the prefix pins down; the rest of the prefix filters names.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / directory if directory else self.root
        found: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(start, onerror=_raise_unless_gone):
                relative_dir = os.path.relpath(dirpath, self.root)
                if relative_dir == ".":
                    relative_dir = ""
                    # Temporaries are not objects.
                    dirnames[:] = [d for d in dirnames if d != RESERVED_TOP_LEVEL]
                for name in filenames:
                    full = f"{relative_dir}/{name}" if relative_dir else name
                    if full.startswith(prefix):
                        found.append(full)
        except OSError as e:
            raise _wrap("list", prefix, e) from e
        return sorted(found)

    # ---- internals ----------------------------------------------------------------------------------------------
    def _make_parents(self, directory: Path) -> None:
        """Create ``directory`` and its missing ancestors, each made durable in its parent."""
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):  # a concurrent put made it first
                os.mkdir(new)
            _fsync_dir(new.parent)

    def _remove_dead_writers_temporaries(self) -> None:
        """Delete temporaries left by writers that died mid-put; a live writer's are left alone."""
        try:
            names = os.listdir(self._temporary_dir)
        except OSError as e:
            raise _wrap("open", str(self._temporary_dir), e) from e
        for name in names:
            pid_text = name.split("-", 1)[0]
            # A live pid may be another store's writer in this process or another one: leave it be.
            if pid_text.isdigit() and _process_alive(int(pid_text)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(self._temporary_dir / name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _raise_unless_gone(error: OSError) -> None:
    # A directory deleted while we walk (or a missing start) just holds no objects.
    if not isinstance(error, FileNotFoundError | NotADirectoryError):
        raise error


def _wrap(operation: str, path: str, error: OSError) -> ObjectStoreError:
    if isinstance(error, FileNotFoundError | NotADirectoryError | IsADirectoryError) and operation != "put":
        return ObjectNotFound(operation, path, str(error))
    return ObjectStoreError(operation, path, str(error), transient=error.errno not in _PERMANENT_ERRNOS)
