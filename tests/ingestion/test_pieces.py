"""Pure pieces of include.ingestion: CSV encoding, type mapping, retry backoff, connecting meanwhile."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from include.ingestion.pipeline import _opened_meanwhile
from include.ingestion.sources.stripe import RetryPolicy
from include.ingestion.tables import Column, RawTable, csv_chunks
from include.ingestion.warehouse.snowflake import snowflake_type


def test_csv_chunks_keep_null_and_empty_string_apart_and_quote_what_needs_it() -> None:
    rows = [
        (
            1,
            None,
            "",
            'say "hi", then\nleave',
            True,
            Decimal("1.50"),
            date(2025, 1, 2),
            datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        )
    ]
    (chunk,) = csv_chunks(rows)
    assert chunk == (b'1,,"","say ""hi"", then\nleave",true,1.50,2025-01-02,2025-01-02T03:04:05+00:00\n')
    (parsed,) = csv.reader(io.StringIO(chunk.decode()))
    assert parsed[3] == 'say "hi", then\nleave'


def test_csv_chunks_are_bounded() -> None:
    chunks = list(csv_chunks(((i, "x" * 100) for i in range(1000)), chunk_bytes=10_000))
    assert len(chunks) > 5
    assert all(len(chunk) < 10_000 + 200 for chunk in chunks)
    assert sum(chunk.count(b"\n") for chunk in chunks) == 1000


def test_raw_table_key_must_be_among_its_columns() -> None:
    with pytest.raises(ValueError, match=r"key columns \['id'\]"):
        RawTable("t", (Column("other", "text"),), ("id",))


@pytest.mark.parametrize(
    ("pg_type", "expected"),
    [
        ("numeric(12,2)", "NUMBER(12,2)"),
        ("bigint", "NUMBER(38,0)"),
        ("integer", "NUMBER(38,0)"),
        ("timestamp with time zone", "TIMESTAMP_TZ"),
        ("boolean", "BOOLEAN"),
        ("jsonb", "VARIANT"),
        ("character(2)", "VARCHAR"),
        ("text", "VARCHAR"),
        ("date", "DATE"),
        ("uuid", "VARCHAR"),
    ],
)
def test_postgres_types_map_to_snowflake(pg_type: str, expected: str) -> None:
    assert snowflake_type(pg_type) == expected


def test_backoff_honours_retry_after_and_otherwise_grows_with_jitter() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=8)
    assert policy.backoff(1, retry_after=3) == 3
    assert policy.backoff(1, retry_after=60) == 8  # capped: the budget stays bounded
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (6, 8)):
        delay = policy.backoff(attempt, retry_after=None)
        assert ceiling / 2 <= delay <= ceiling


class _Connection:
    def __init__(self) -> None:
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


def test_a_connection_opened_meanwhile_is_closed_when_the_load_fails_before_using_it() -> None:
    connection = _Connection()
    with pytest.raises(RuntimeError, match="source refused"), _opened_meanwhile(lambda: connection):
        raise RuntimeError("source refused")
    assert connection.closes == 1


def test_a_failed_connect_meanwhile_does_not_hide_the_loads_own_error() -> None:
    """The block failed first (say, the source refused): its error is the one raised, and the
    helper's failure to connect is not raised over it on the way out."""

    def refuse() -> _Connection:
        raise ConnectionRefusedError("warehouse refused")

    with pytest.raises(RuntimeError, match="source refused"), _opened_meanwhile(refuse):
        raise RuntimeError("source refused")
