"""Object storage for SSTs: the ``ObjectStore`` boundary and every implementation of it.

Place in the data flow (DESIGN §6): the state store writes each immutable SST
with ``put`` and reads its footer and blocks back with ``get_range``;
compaction ``list``s and ``delete``s. Import everything from here:

- ``MemoryObjectStore`` (this module): a dict under a lock; tests and the simulation.
- ``LocalObjectStore`` (``object_store_local``): the ``fs`` store, files under a
  directory. Implemented in Python, not with OpenDAL's ``fs`` service, because
  OpenDAL neither writes atomically by default nor fsyncs the directory after
  its rename; here a put is temp file + fsync + rename + fsync of the directory,
  so it is atomic and durable.
- ``OpendalObjectStore`` (``object_store_opendal``): OpenDAL, used for ``s3``
  (and ``memory``; ``fs`` is accepted but not the default).
- ``RetryingObjectStore`` and ``FaultyObjectStore`` (``object_store_faults``):
  retries with backoff, and named failpoints.

The contract every store keeps (atomic puts, ``ObjectNotFound`` naming the path,
exact ranges, S3-style prefix listing) is in ``object_store_base``'s docstring.

``object_store_from_url`` maps a configuration URL to a store:

- ``fs:///abs/dir``: ``LocalObjectStore("/abs/dir")``.
- ``memory://``: ``MemoryObjectStore()``.
- ``s3://bucket/prefix?endpoint=...&region=...&access_key_id=...&secret_access_key=...``:
  ``OpendalObjectStore("s3", bucket=..., root="/prefix", ...)``; any other query
  parameter is passed to OpenDAL's s3 service as an option.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from tidegate.state.object_store_base import (
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    check_path,
    check_prefix,
    check_range,
)
from tidegate.state.object_store_faults import FaultyObjectStore, InjectedFault, RetryingObjectStore
from tidegate.state.object_store_local import LocalObjectStore
from tidegate.state.object_store_opendal import OpendalObjectStore

__all__ = [
    "FaultyObjectStore",
    "InjectedFault",
    "LocalObjectStore",
    "MemoryObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "OpendalObjectStore",
    "RetryingObjectStore",
    "object_store_from_url",
]


class MemoryObjectStore(ObjectStore):
    """Objects in a dict; every call is thread-safe, and a put replaces the value in one step."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryObjectStore({len(self._objects)} objects)"

    def put(self, path: str, data: bytes) -> None:
        check_path("put", path)
        data = bytes(data)
        with self._lock:
            self._objects[path] = data

    def get(self, path: str) -> bytes:
        check_path("get", path)
        with self._lock:
            data = self._objects.get(path)
        if data is None:
            raise ObjectNotFound("get", path)
        return data

    def get_range(self, path: str, start: int, length: int) -> bytes:
        check_path("get_range", path)
        check_range(path, start, length)
        with self._lock:
            data = self._objects.get(path)
        if data is None:
            raise ObjectNotFound("get_range", path)
        check_range(path, start, length, len(data))
        return data[start : start + length]

    def size(self, path: str) -> int:
        check_path("size", path)
        with self._lock:
            data = self._objects.get(path)
        if data is None:
            raise ObjectNotFound("size", path)
        return len(data)

    def delete(self, path: str) -> None:
        check_path("delete", path)
        with self._lock:
            self._objects.pop(path, None)

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        with self._lock:
            return sorted(path for path in self._objects if path.startswith(prefix))


def object_store_from_url(url: str) -> ObjectStore:
    """The store a configuration URL names (see the module docstring); a bad URL raises ``ObjectStoreError``."""
    parts = urlsplit(url)
    shown = _redacted(url)

    def refuse(reason: str) -> ObjectStoreError:
        return ObjectStoreError("open", shown, reason, transient=False)

    if parts.scheme == "fs":
        if parts.netloc or not parts.path.startswith("/") or parts.query:
            raise refuse("an fs URL is fs:///absolute/directory (three slashes, no host, no query)")
        return LocalObjectStore(unquote(parts.path))
    if parts.scheme == "memory":
        if parts.netloc or parts.path.strip("/") or parts.query:
            raise refuse("a memory URL is just memory://")
        return MemoryObjectStore()
    if parts.scheme == "s3":
        if not parts.netloc:
            raise refuse("an s3 URL names its bucket: s3://bucket/prefix?endpoint=...")
        options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        if "bucket" in options or "root" in options:
            raise refuse("give the bucket and the prefix in the URL's path, not as query parameters")
        prefix = unquote(parts.path).strip("/")
        options["bucket"] = parts.netloc
        options["root"] = "/" + prefix + ("/" if prefix else "")
        return OpendalObjectStore("s3", **options)
    raise refuse("unknown scheme; expected fs:///dir, memory:// or s3://bucket/prefix?...")


CREDENTIAL_OPTIONS = ("access_key_id", "secret_access_key", "session_token")


def without_credentials(url: str) -> str:
    """``url`` without its credential options: what a data dir may remember of its object store."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in CREDENTIAL_OPTIONS]
    return parts._replace(query=urlencode(pairs)).geturl()


def _redacted(url: str) -> str:
    """``url`` with credential values replaced, fit for an error message or a log line."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    shown = "&".join(f"{k}={'***' if k in ('secret_access_key', 'session_token') else v}" for k, v in pairs)
    return parts._replace(query=shown).geturl()
