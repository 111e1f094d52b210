"""OpendalObjectStore: the object store over Apache OpenDAL (``s3`` for clusters, ``memory`` for tests).

Place in the data flow: what ``object_store_from_url("s3://...")`` returns; the
state store's SST uploads and block reads go through it to the bucket. An S3
PUT is atomic by S3's own contract (a GET sees the old object or the new one),
and so is OpenDAL's ``memory`` service, which stores the value on close.

The ``fs`` scheme is accepted (rooted at ``root``, with OpenDAL's
``atomic_write_dir`` under ``<root>/.tmp`` so a put is at least atomic), but it
is not what tidegate uses for local files: OpenDAL does not fsync the directory
after its rename, so ``object_store_from_url("fs://...")`` returns the durable
``LocalObjectStore`` instead.

For ``s3`` this store turns off OpenDAL's loading of credentials from the
environment, ``~/.aws`` and the EC2 instance-metadata address, so that what the
configuration says is all it uses; pass ``disable_config_load="false"`` to opt
back in.

OpenDAL errors become ``ObjectStoreError`` (``ObjectNotFound`` for a missing
object). An error is transient unless OpenDAL marks it permanent or its kind
(bad configuration, permission denied, unsupported, ...) cannot change by
trying again. This store does not retry; wrap it in ``RetryingObjectStore``.
"""

from __future__ import annotations

import builtins
from typing import Any

import opendal
import opendal.exceptions

from tidegate.state.object_store_base import (
    RESERVED_TOP_LEVEL,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    check_path,
    check_prefix,
    check_range,
)

SUPPORTED_SCHEMES = ("fs", "s3", "memory")
# Kinds of OpenDAL error that trying again cannot fix.
_PERMANENT_KINDS = frozenset(
    {
        "AlreadyExists",
        "ConditionNotMatch",
        "ConfigInvalid",
        "IsADirectory",
        "IsSameFile",
        "NotADirectory",
        "PermissionDenied",
        "RangeNotSatisfied",
        "Unsupported",
    }
)
# OpenDAL's exception classes do not share a base class: gather them, so that other exceptions (bugs) propagate.
_OPENDAL_ERRORS: tuple[type[BaseException], ...] = tuple(
    value for value in vars(opendal.exceptions).values() if isinstance(value, type) and issubclass(value, Exception)
)
_S3_DEFAULTS = {"region": "us-east-1", "disable_config_load": "true", "disable_ec2_metadata": "true"}
# Options never shown in repr or messages.
_SECRET_OPTIONS = frozenset({"secret_access_key", "session_token", "access_key_id"})


class OpendalObjectStore(ObjectStore):
    """An ``ObjectStore`` over one OpenDAL operator: ``scheme`` is ``fs``, ``s3`` or ``memory``.

    ``fs`` takes ``root=DIR``; ``s3`` takes ``bucket``, ``endpoint``, ``region``,
    ``access_key_id``, ``secret_access_key`` and ``root`` (a key prefix), and any
    other option of OpenDAL's s3 service; ``memory`` takes none.
    """

    def __init__(self, scheme: str, **options: str) -> None:
        if scheme not in SUPPORTED_SCHEMES:
            raise ObjectStoreError(
                "open", scheme, f"unsupported scheme (expected one of {', '.join(SUPPORTED_SCHEMES)})", transient=False
            )
        settings = dict(options)
        if scheme == "s3":
            settings = {**_S3_DEFAULTS, **settings}
            if not settings.get("bucket"):
                raise ObjectStoreError("open", "s3", "the s3 scheme needs a bucket", transient=False)
        elif scheme == "fs":
            if not settings.get("root"):
                raise ObjectStoreError("open", "fs", "the fs scheme needs root=DIR", transient=False)
            settings.setdefault("atomic_write_dir", settings["root"].rstrip("/") + "/" + RESERVED_TOP_LEVEL)
        self.scheme = scheme
        self._shown_options = {k: v for k, v in settings.items() if k not in _SECRET_OPTIONS}
        try:
            self._operator = opendal.Operator(scheme, **settings)
        except _OPENDAL_ERRORS as e:
            raise _wrap("open", self._describe(), e) from e

    def __repr__(self) -> str:
        return f"OpendalObjectStore({self._describe()})"

    def _describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self._shown_options.items()))
        return f"{self.scheme}: {shown}" if shown else self.scheme

    # ---- the ObjectStore protocol -------------------------------------------------------------------------------
    def put(self, path: str, data: bytes) -> None:
        check_path("put", path)
        self._call("put", path, self._operator.write, path, bytes(data))

    def get(self, path: str) -> bytes:
        check_path("get", path)
        return bytes(self._call("get", path, self._operator.read, path))

    def get_range(self, path: str, start: int, length: int) -> bytes:
        check_path("get_range", path)
        check_range(path, start, length)
        if length == 0:
            # OpenDAL answers an empty range without looking; the contract still wants missing objects to raise.
            check_range(path, start, length, self.size(path))
            return b""
        try:
            data = bytes(self._call("get_range", path, self._operator.read, path, offset=start, size=length))
        except ObjectStoreError as e:
            if isinstance(e, ObjectNotFound) or e.transient:
                raise
            # Services word a range past the end differently (416, "reader got too little data"): say it one way.
            check_range(path, start, length, self.size(path))
            raise
        if len(data) != length:
            # Some servers answer a range that runs past the end with what there is: refuse the short read.
            check_range(path, start, length, start + len(data))
        return data

    def size(self, path: str) -> int:
        check_path("size", path)
        metadata = self._call("size", path, self._operator.stat, path)
        if metadata.mode.is_dir():
            raise ObjectNotFound("size", path, "a directory, not an object")
        return int(metadata.content_length)

    def delete(self, path: str) -> None:
        check_path("delete", path)
        try:
            self._call("delete", path, self._operator.delete, path)
        except ObjectNotFound:
            return

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        directory = prefix[: prefix.rfind("/") + 1]
        try:
            entries = self._call("list", prefix, self._list_recursive, directory)
        except ObjectNotFound:
            return []
        return sorted(
            path
            for path in entries
            if path.startswith(prefix) and not path.endswith("/") and not path.startswith(RESERVED_TOP_LEVEL + "/")
        )

    # ---- internals ----------------------------------------------------------------------------------------------
    def _list_recursive(self, directory: str) -> builtins.list[str]:
        return [entry.path for entry in self._operator.list(directory, recursive=True)]

    def _call(self, operation: str, path: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except _OPENDAL_ERRORS as e:
            raise _wrap(operation, path, e, self._describe()) from e


def _wrap(operation: str, path: str, error: BaseException, where: str = "") -> ObjectStoreError:
    kind = type(error).__name__
    # OpenDAL's messages carry a multi-line context (service, path, range): keep it, on one line.
    # The backtrace that follows is all "<unknown>" frames in a release build: drop it.
    text = str(error).split("Backtrace:", 1)[0]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    detail = f"{text} [{where}]" if where else text
    if kind == "NotFound":
        return ObjectNotFound(operation, path, detail)
    first_line = str(error).split("\n", 1)[0]
    transient = kind not in _PERMANENT_KINDS and "(permanent)" not in first_line
    return ObjectStoreError(operation, path, detail, transient=transient)
