"""The object-store boundary: the Protocol, its errors and the rules every implementation keeps.

Place in the data flow (DESIGN §6): the state store uploads immutable SSTs and
reads their blocks back through an ``ObjectStore``; nothing above it knows
whether the bytes live in memory, in a local directory or in an S3 bucket.
``tidegate.state.object_store`` gathers the implementations; this module holds
what they share, so that each can import it without importing the others.

Contract (the behaviour suite in ``tests/unit/state/test_object_store.py``
checks it against every implementation):

- A path is relative and ``/``-separated: non-empty, no leading or trailing
  ``/``, no empty, ``.`` or ``..`` component, no NUL, and not under the
  reserved top-level ``.tmp/`` (where the local store keeps its temporaries).
- ``put`` is atomic: a reader sees the whole new object or the whole old one
  (or nothing), never a prefix. Overwriting an object replaces it.
- ``get`` of a missing object raises ``ObjectNotFound`` naming the path.
- ``get_range`` returns exactly ``length`` bytes or raises: a range past the
  end of the object is an ``ObjectStoreError``, never a silently short read.
- ``delete`` of a missing object is not an error.
- ``list(prefix)`` matches like S3: every object whose full path starts with
  the string ``prefix`` (``"sst/0"`` matches ``"sst/01.sst"``), sorted.
- Every failure is an ``ObjectStoreError`` naming the operation and the path.
  ``transient`` says whether trying again may help; ``RetryingObjectStore``
  retries only those.
"""

from __future__ import annotations

from typing import Protocol

from tidegate.errors import InternalError

# The top-level directory that no object may live under: the local store
# writes its temporaries there, and every store refuses it alike.
RESERVED_TOP_LEVEL = ".tmp"


class ObjectStoreError(InternalError):
    """An object-store operation failed; the message names the operation and the object's path.

    ``transient`` is true when the same call may succeed if tried again (a
    dropped connection, a throttled request, an injected fault) and false when
    it cannot (a bad path, a range past the end, permission denied).
    """

    def __init__(self, operation: str, path: str, detail: str, *, transient: bool = True) -> None:
        super().__init__(f"object store {operation} of {path!r} failed: {detail}")
        self.operation = operation
        self.path = path
        self.detail = detail
        self.transient = transient

    def __reduce__(self) -> tuple[object, ...]:
        # The constructor's arguments are not the message alone, so Exception's default pickling cannot rebuild it.
        return (type(self), (self.operation, self.path, self.detail), self.__dict__)


class ObjectNotFound(ObjectStoreError):
    """The object does not exist (get, get_range or size of a missing path)."""

    def __init__(self, operation: str, path: str, detail: str = "") -> None:
        super().__init__(operation, path, detail or "no such object", transient=False)
        self.message = f"object {path!r} not found ({operation})" + (f": {detail}" if detail else "")
        self.args = (self.message,)


class ObjectStore(Protocol):
    """Immutable blobs under relative ``/``-separated paths; see the module docstring for the contract."""

    def put(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path``, atomically: a reader sees all of it or none of it."""
        ...

    def get(self, path: str) -> bytes:
        """The whole object; ``ObjectNotFound`` if there is none."""
        ...

    def get_range(self, path: str, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes from offset ``start``; a range past the end raises."""
        ...

    def size(self, path: str) -> int:
        """The object's length in bytes; ``ObjectNotFound`` if there is none."""
        ...

    def delete(self, path: str) -> None:
        """Remove the object; a missing one is fine."""
        ...

    def list(self, prefix: str) -> list[str]:
        """The full paths of every object whose path starts with ``prefix``, sorted."""
        ...


def check_path(operation: str, path: str) -> None:
    """Raise a non-transient ``ObjectStoreError`` unless ``path`` is a valid object path."""
    problem = _path_problem(path, is_prefix=False)
    if problem is not None:
        raise ObjectStoreError(operation, path, f"invalid object path: {problem}", transient=False)


def check_prefix(prefix: str) -> None:
    """Raise unless ``prefix`` could begin a valid path (``""``, a trailing ``/`` and a partial name are fine)."""
    problem = _path_problem(prefix, is_prefix=True)
    if problem is not None:
        raise ObjectStoreError("list", prefix, f"invalid prefix: {problem}", transient=False)


def _path_problem(path: str, *, is_prefix: bool) -> str | None:
    if not isinstance(path, str):
        return f"not a string but {type(path).__name__}"
    if path == "":
        return None if is_prefix else "empty"
    if path.startswith("/"):
        return "starts with '/' (object paths are relative)"
    if "\x00" in path:
        return "contains NUL"
    parts = path.split("/")
    # The last component of a prefix may be partial ("sst/0") or empty (a trailing '/').
    whole_parts = parts[:-1] if is_prefix else parts
    if any(part in ("", ".", "..") for part in whole_parts):
        return "has an empty, '.' or '..' component"
    if parts[0] == RESERVED_TOP_LEVEL and len(whole_parts) > 0:
        return f"'{RESERVED_TOP_LEVEL}/' is reserved"
    return None


def check_range(path: str, start: int, length: int, object_size: int | None = None) -> None:
    """Raise unless ``[start, start + length)`` is a valid range (inside an object of ``object_size``)."""
    if start < 0 or length < 0:
        raise ObjectStoreError("get_range", path, f"negative range start={start} length={length}", transient=False)
    if object_size is not None and start + length > object_size:
        raise ObjectStoreError(
            "get_range",
            path,
            f"range [{start}, {start + length}) is past the end of the object ({object_size} bytes)",
            transient=False,
        )
