"""Fixtures of the sink target tests: a fresh schema per test on the session's PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[tuple[psycopg.Connection, str]]:
    """A fresh schema (dropped afterwards) and an autocommit connection that reads in UTC."""
    schema = f"sink_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
        connection.execute("SET TimeZone = 'UTC'")
        try:
            yield connection, schema
        finally:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
