"""Server configuration: a TOML file, overridden by command-line options.

    data_dir = "/var/lib/tidegate"
    listen = "127.0.0.1:4566"
    cache_budget = "512MiB"          # state kept in memory: block cache + operator caches

    [state_store]                    # where checkpoints go (default: DATA_DIR/objects)
    url = "s3://bucket/prefix"
    endpoint = "http://127.0.0.1:9000"
    region = "us-east-1"
    access_key_id = "..."
    secret_access_key = "..."

    [meta_store]                     # catalog and checkpoint versions (default: SQLite in the data dir)
    url = "postgresql://tidegate@db.internal:5432/tidegate?schema=prod"
    password = "..."

Credentials stay in the file (or the environment: ``AWS_ACCESS_KEY_ID``…,
``PGPASSWORD``); the data dir remembers each store's location without them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from tidegate.errors import InvalidParameterValue

_TOP_KEYS = {"data_dir", "listen", "cache_budget", "state_store", "meta_store"}
_STATE_STORE_KEYS = {"url", "endpoint", "region", "access_key_id", "secret_access_key", "session_token"}
_META_STORE_KEYS = {"url", "password"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}
_UNITS |= {"tb": 10**12, "tib": 2**40}


@dataclass
class ServerConfig:
    data_dir: Path | None = None
    listen: str | None = None
    cache_budget_bytes: int | None = None
    state_store_url: str | None = None
    meta_store_url: str | None = None


def parse_size(text: str | int) -> int:
    """``"512MiB"``, ``"2GB"``, ``"1048576"`` or an integer → bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise InvalidParameterValue(f"invalid size {text!r}: use a number of bytes or e.g. 512MiB, 2GB")
        size = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if size <= 0:
        raise InvalidParameterValue(f"invalid size {text!r}: it must be positive")
    return size


def load_config(path: Path) -> ServerConfig:
    try:
        with path.open("rb") as file:
            raw = tomllib.load(file)
    except OSError as error:
        raise InvalidParameterValue(f"cannot read the configuration file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise InvalidParameterValue(f"the configuration file {path} is not valid TOML: {error}") from error
    _check_keys(raw, _TOP_KEYS, str(path))
    config = ServerConfig()
    if "data_dir" in raw:
        config.data_dir = (path.parent / str(raw["data_dir"])).resolve()
    if "listen" in raw:
        config.listen = str(raw["listen"])
    if "cache_budget" in raw:
        config.cache_budget_bytes = parse_size(raw["cache_budget"])
    if "state_store" in raw:
        config.state_store_url = _state_store_url(_table(raw, "state_store", path), path)
    if "meta_store" in raw:
        config.meta_store_url = _meta_store_url(_table(raw, "meta_store", path), path)
    return config


def _table(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw[name]
    if not isinstance(value, dict):
        raise InvalidParameterValue(f"{path}: [{name}] must be a table with a url key")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidParameterValue(
            f"{where}: unknown setting {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )


def _state_store_url(table: dict[str, Any], path: Path) -> str:
    _check_keys(table, _STATE_STORE_KEYS, f"{path} [state_store]")
    if "url" not in table:
        raise InvalidParameterValue(f"{path}: [state_store] needs a url (fs:///dir or s3://bucket/prefix)")
    url = str(table["url"])
    options = {k: str(v) for k, v in table.items() if k != "url"}
    if not options:
        return url
    if not url.startswith("s3://"):
        raise InvalidParameterValue(f"{path}: [state_store] {', '.join(sorted(options))} apply to s3:// URLs only")
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(options)) if q)
    return urlunsplit(parts._replace(query=query))


def _meta_store_url(table: dict[str, Any], path: Path) -> str:
    _check_keys(table, _META_STORE_KEYS, f"{path} [meta_store]")
    if "url" not in table:
        raise InvalidParameterValue(f"{path}: [meta_store] needs a url (postgresql://user@host:port/database)")
    url = str(table["url"])
    if "password" not in table:
        return url
    parts = urlsplit(url)
    if parts.username is None:
        raise InvalidParameterValue(f"{path}: [meta_store] a password needs a user name in the url")
    host = parts.hostname or ""
    netloc = f"{quote(parts.username, safe='')}:{quote(str(table['password']), safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
