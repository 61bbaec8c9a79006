"""Snowflake writer against PyPI's fakesnow (Snowflake emulated on DuckDB), compared with the Postgres writer.

Two real fakesnow modes: ``fakesnow.patch()`` in process (PUT to a stage, COPY INTO, the merge), and
the ``fakesnow -s`` HTTP server reached through the connection's host, port and ``protocol: http``
(the extra the provider's hook does not forward by itself).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fakesnow
import psycopg
import pytest

from include.dev.airflow_settings import ConnectionSpec
from include.dev.embedded_postgres import EmbeddedPostgres
from include.ingestion.pipeline import extract, warehouse_for
from include.ingestion.state import STATE_TABLE
from include.ingestion.warehouse.snowflake import ProtocolAwareSnowflakeHook
from tests.dbt.conftest import snowflake_connection_env

SOURCES = """
sources:
  - {name: items, kind: postgres, conn_id: ecommerce_source, table: items, primary_key: [item_id],
     cursor: updated_at, mode: incremental, overlap_seconds: 0}
  - {name: loose, kind: postgres, conn_id: ecommerce_source, table: loose, primary_key: [id],
     cursor: updated_at, mode: incremental}
"""
SOURCE_SCHEMA = """
CREATE TABLE items (item_id bigint PRIMARY KEY, sku text NOT NULL, name text, price numeric(12,2),
    is_active boolean, attrs jsonb, launched date, country char(2), updated_at timestamptz);
INSERT INTO items
SELECT i, 'SKU-' || i,
       CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN 'Mug, "large"' WHEN 2 THEN E'two\\nlines' WHEN 3 THEN 'Café ☕' ELSE 'plain' END,
       (i * 1.25)::numeric(12,2), i % 3 <> 0,
       CASE WHEN i % 4 = 0 THEN NULL ELSE jsonb_build_object('size', i % 7, 'tags', jsonb_build_array('a', i)) END,
       date '2024-01-01' + i, CASE WHEN i % 2 = 0 THEN 'DE' END,
       timestamptz '2025-01-01 00:00:00.123456+00' + i * interval '1 second'
FROM generate_series(1, 500) AS i;
CREATE TABLE loose (id bigint, note text, updated_at timestamptz);  -- no primary key in the source
INSERT INTO loose VALUES (1, 'one', '2025-01-01'), (2, 'two', '2025-01-01');
"""
ONE_DAY_OF_CHANGES = """
UPDATE items SET price = price + 1, updated_at = timestamptz '2025-02-01 00:00:00+00' WHERE item_id <= 10;
INSERT INTO items (item_id, sku, name, updated_at) VALUES (501, 'SKU-501', 'new', timestamptz '2025-02-01 00:00:01+00');
"""


@pytest.fixture
def sources_file(tmp_path: Path) -> Path:
    path = tmp_path / "sources.yml"
    path.write_text(SOURCES)
    return path


@pytest.fixture
def postgres_side(postgres_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Source and Postgres warehouse databases, as the contract's Connections."""
    suffix = uuid.uuid4().hex[:8]
    dsns = {}
    for conn_id, role, database in (("ecommerce_source", "shop", f"sf_src_{suffix}"),
                                    ("warehouse_postgres", "warehouse", f"sf_wh_{suffix}")):  # fmt: skip
        postgres_server.ensure_role(role, f"{role}-Pa55word")
        postgres_server.ensure_database(database, owner=role)
        spec = ConnectionSpec(conn_id, "postgres", postgres_server.host, postgres_server.port, database, role,
                              f"{role}-Pa55word")  # fmt: skip
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", spec.to_env_value())
        dsns[conn_id] = postgres_server.dsn(database, role, f"{role}-Pa55word")
    with psycopg.connect(dsns["ecommerce_source"]) as conn:
        conn.execute(SOURCE_SCHEMA)
    return dsns


def snowflake_connection(monkeypatch: pytest.MonkeyPatch, database: str, **network: object) -> None:
    for key, value in snowflake_connection_env(database, **network).items():
        monkeypatch.setenv(key, value)


def postgres_raw(dsn: str, table: str, key: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT * FROM raw.{table} ORDER BY {key}").fetchall()
    return [_normalise(row[:-2]) for row in rows]  # without _loaded_at, _batch_id


def snowflake_raw(table: str, key: str) -> list[tuple]:
    conn = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake").get_conn()
    try:
        cursor = conn.cursor()
        cursor.execute(f"SELECT * EXCLUDE (_loaded_at, _batch_id) FROM raw.{table} ORDER BY {key}")
        return [_normalise(row) for row in cursor.fetchall()]
    finally:
        conn.close()


def _normalise(row: tuple) -> tuple:
    """Same value, same Python form: VARIANT comes back as JSON text, jsonb as a dict."""
    return tuple(json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for v in row)


def test_the_hook_forwards_protocol_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    snowflake_connection(monkeypatch, "analytics", host="127.0.0.1", port=8085, protocol="http")
    params = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake")._get_conn_params()
    assert (params["protocol"], params["host"], params["port"], params["account"]) == ("http", "127.0.0.1", 8085, "local")


def test_in_process_stage_and_merge_equal_the_postgres_writer(
    postgres_side: dict[str, str], sources_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snowflake_connection(monkeypatch, "analytics")
    with fakesnow.patch():
        full = extract("items", warehouse="snowflake", batch_id="b1", config_path=sources_file)
        extract("items", warehouse="postgres", batch_id="b1", config_path=sources_file)
        assert (full.rows_read, full.rows_merged, full.high_water) == (500, 500, "2025-01-01T00:08:20.123456+00:00")
        assert snowflake_raw("items", "item_id") == postgres_raw(postgres_side["warehouse_postgres"], "items", "item_id")

        with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
            conn.execute(ONE_DAY_OF_CHANGES)
        incremental = extract("items", warehouse="snowflake", batch_id="b2", config_path=sources_file)
        extract("items", warehouse="postgres", batch_id="b2", config_path=sources_file)
        assert (incremental.mode, incremental.rows_merged) == ("incremental", 11)
        assert snowflake_raw("items", "item_id") == postgres_raw(postgres_side["warehouse_postgres"], "items", "item_id")

        rerun = extract("items", warehouse="snowflake", batch_id="b3", config_path=sources_file, full_refresh=True)
        assert (rerun.rows_read, rerun.rows_merged) == (501, 0)


@pytest.mark.parametrize("warehouse", ["postgres", "snowflake"])
def test_a_failing_merge_leaves_raw_as_it_was(
    postgres_side: dict[str, str], sources_file: Path, monkeypatch: pytest.MonkeyPatch, warehouse: str
) -> None:
    """A row with a NULL key fails the insert after the update of a changed row already ran: all
    rolls back, the high-water mark included."""
    snowflake_connection(monkeypatch, "analytics")
    with fakesnow.patch():
        first = extract("loose", warehouse=warehouse, batch_id="b1", config_path=sources_file)
        with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
            conn.execute("UPDATE loose SET note = 'changed', updated_at = '2025-02-01' WHERE id = 1")
            conn.execute("INSERT INTO loose VALUES (NULL, 'no key', '2025-02-01')")
        with pytest.raises(Exception, match="(?i)null"):
            extract("loose", warehouse=warehouse, batch_id="b2", config_path=sources_file)
        query = "SELECT id, note, _batch_id FROM raw.loose ORDER BY id"
        mark_query = "SELECT high_water FROM raw._ingestion_state WHERE source = 'loose'"
        if warehouse == "snowflake":
            conn = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake").get_conn()
            rows = conn.cursor().execute(query).fetchall()
            marks = conn.cursor().execute(mark_query).fetchall()
        else:
            with psycopg.connect(postgres_side["warehouse_postgres"]) as conn:
                rows = conn.execute(query).fetchall()
                marks = conn.execute(mark_query).fetchall()
    assert [tuple(row) for row in rows] == [(1, "one", "b1"), (2, "two", "b1")]
    assert [tuple(mark) for mark in marks] == [(first.high_water,)]


@pytest.mark.slow  # starts the fakesnow server (~5 s)
def test_fakesnow_server_merge_equals_the_postgres_writer(
    postgres_side: dict[str, str], sources_file: Path, monkeypatch: pytest.MonkeyPatch, fakesnow_server: int
) -> None:
    database = f"analytics_{uuid.uuid4().hex[:6]}"
    snowflake_connection(monkeypatch, database, host="127.0.0.1", port=fakesnow_server, protocol="http")
    extract("items", warehouse="snowflake", batch_id="b1", config_path=sources_file)
    with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
        conn.execute(ONE_DAY_OF_CHANGES)
    incremental = extract("items", warehouse="snowflake", batch_id="b2", config_path=sources_file)
    rerun = extract("items", warehouse="snowflake", batch_id="b3", config_path=sources_file)
    extract("items", warehouse="postgres", batch_id="b1", config_path=sources_file)

    assert (incremental.rows_merged, rerun.rows_merged) == (11, 0)
    assert snowflake_raw("items", "item_id") == postgres_raw(postgres_side["warehouse_postgres"], "items", "item_id")


@pytest.mark.parametrize("warehouse", ["postgres", "snowflake"])
def test_upsert_writes_values_as_given_and_updates_by_key(
    postgres_side: dict[str, str], monkeypatch: pytest.MonkeyPatch, warehouse: str
) -> None:
    """Bookkeeping rows go in as literals on Snowflake: quotes, ``%`` (the statements run with
    pyformat parameters) and NULL must arrive unchanged; a second upsert of the key updates it."""
    snowflake_connection(monkeypatch, "analytics")
    tricky = ("100% 'sale'", "updated_at", None)
    with fakesnow.patch():
        target = warehouse_for(warehouse)
        for batch, row in (("b1", tricky), ("b2", (tricky[0], "updated_at", "2025-02-01T00:00:00+00:00"))):
            with target.session(batch, [STATE_TABLE]) as session:
                session.upsert(STATE_TABLE, [row])
                session.commit()
            with target.session("read", [STATE_TABLE]) as session:
                assert [(r["source"], r["cursor_column"], r["high_water"]) for r in session.read(STATE_TABLE)] == [row]
