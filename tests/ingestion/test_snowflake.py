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

from dev.airflow_settings import ConnectionSpec
from dev.embedded_postgres import EmbeddedPostgres
from include.ingestion.pipeline import extract
from include.ingestion.state import STATE_TABLE
from include.ingestion.warehouse.snowflake import ProtocolAwareSnowflakeHook
from include.warehouses import warehouse as warehouse_spec
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
       CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN 'Mug, "large"' WHEN 2 THEN E'two\\nlines'
                  WHEN 3 THEN 'Café ☕' ELSE 'plain' END,
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
    for conn_id, role, database in (
        ("ecommerce_source", "shop", f"sf_src_{suffix}"),
        ("warehouse_postgres", "warehouse", f"sf_wh_{suffix}"),
    ):
        postgres_server.ensure_role(role, f"{role}-Pa55word")
        postgres_server.ensure_database(database, owner=role)
        spec = ConnectionSpec(
            conn_id, "postgres", postgres_server.host, postgres_server.port, database, role, f"{role}-Pa55word"
        )
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
    assert (params["protocol"], params["host"], params["port"], params["account"]) == (
        "http",
        "127.0.0.1",
        8085,
        "local",
    )


def test_in_process_stage_and_merge_equal_the_postgres_writer(
    postgres_side: dict[str, str], sources_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snowflake_connection(monkeypatch, "analytics")
    with fakesnow.patch():
        full = extract("items", warehouse="snowflake", batch_id="b1", config_path=sources_file)
        extract("items", warehouse="postgres", batch_id="b1", config_path=sources_file)
        assert (full.rows_read, full.rows_merged, full.high_water) == (500, 500, "2025-01-01T00:08:20.123456+00:00")
        assert snowflake_raw("items", "item_id") == postgres_raw(
            postgres_side["warehouse_postgres"], "items", "item_id"
        )

        with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
            conn.execute(ONE_DAY_OF_CHANGES)
        incremental = extract("items", warehouse="snowflake", batch_id="b2", config_path=sources_file)
        extract("items", warehouse="postgres", batch_id="b2", config_path=sources_file)
        assert (incremental.mode, incremental.rows_merged) == ("incremental", 11)
        assert snowflake_raw("items", "item_id") == postgres_raw(
            postgres_side["warehouse_postgres"], "items", "item_id"
        )

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


@pytest.mark.slow  # starts the fakesnow server
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
        target = warehouse_spec(warehouse).load_writer()
        for batch, row in (("b1", tricky), ("b2", (tricky[0], "updated_at", "2025-02-01T00:00:00+00:00"))):
            with target.session(batch, [STATE_TABLE]) as session:
                session.upsert(STATE_TABLE, [row])
                session.commit()
            with target.session("read", [STATE_TABLE]) as session:
                assert [(r["source"], r["cursor_column"], r["high_water"]) for r in session.read(STATE_TABLE)] == [row]


MARKETING_SOURCES = """
sources:
  - {name: marketing_spend, kind: marketing_csv, landing_url_variable: marketing_landing_url,
     primary_key: [date, channel, campaign_id], mode: incremental}
"""
MARKETING_HEADER = "date,channel,campaign_id,campaign_name,spend,impressions,clicks\n"
# In a Snowflake string literal `\'` is a quote: a literal built from this name by doubling quotes
# ends after `x\'`, and the rest, ` OR 1=1 --`, becomes the DELETE's condition.
HOSTILE_FILE = "marketing_spend_x\\') OR 1=1 --.csv"


def _marketing_tables(warehouse: str, dsn: str) -> dict[str, list[tuple]]:
    keys = {
        "marketing_spend": "date, channel, campaign_id",
        "marketing_spend_rejects": "_source_file, _source_line",
        "_landed_files": "file_name",
    }
    if warehouse == "snowflake":
        return {table: snowflake_raw(table, key) for table, key in keys.items()}
    return {table: postgres_raw(dsn, table, key) for table, key in keys.items()}


@pytest.mark.slow  # starts the fakesnow server
def test_a_landing_file_name_that_breaks_a_snowflake_literal_changes_nothing_else(
    postgres_side: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakesnow_server: int
) -> None:
    """The name reaches the rejects merge's replace scope: bound as a value it deletes no other
    file's rejects, on both warehouses, and the file's own rows land under their real name."""
    sources = tmp_path / "sources.yml"
    sources.write_text(MARKETING_SOURCES)
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("AIRFLOW_VAR_MARKETING_LANDING_URL", f"file://{landing}")
    snowflake_connection(
        monkeypatch, f"analytics_{uuid.uuid4().hex[:6]}", host="127.0.0.1", port=fakesnow_server, protocol="http"
    )
    (landing / "marketing_spend_2025-03-01.csv").write_text(
        MARKETING_HEADER + "2025-03-01,email,e1,Newsletter,10.00,1000,50\n2025-03-01,tv,tv1,Prime,9.00,1,1\n"
    )
    for warehouse in ("snowflake", "postgres"):
        extract("marketing_spend", warehouse=warehouse, batch_id="m1", config_path=sources)
    (landing / HOSTILE_FILE).write_text(
        MARKETING_HEADER + "2025-03-02,social,s1,Stories,5.00,500,5\n2025-03-02,social,s2,Stories,-1.00,1,1\n"
    )

    reports = {
        w: extract("marketing_spend", warehouse=w, batch_id="m2", config_path=sources)
        for w in ("snowflake", "postgres")
    }

    assert {w: r.files for w, r in reports.items()} == {"snowflake": (HOSTILE_FILE,), "postgres": (HOSTILE_FILE,)}
    tables = {w: _marketing_tables(w, postgres_side["warehouse_postgres"]) for w in ("snowflake", "postgres")}
    assert tables["snowflake"] == tables["postgres"]
    assert [row[:2] for row in tables["snowflake"]["marketing_spend_rejects"]] == [
        ("marketing_spend_2025-03-01.csv", 3),
        (HOSTILE_FILE, 3),
    ]
    assert [row[0] for row in tables["snowflake"]["_landed_files"]] == ["marketing_spend_2025-03-01.csv", HOSTILE_FILE]
    source_files = [row[7] for row in tables["snowflake"]["marketing_spend"]]
    assert source_files == ["marketing_spend_2025-03-01.csv", HOSTILE_FILE]


RESERVED_SOURCES = """
sources:
  - {name: slots, kind: postgres, conn_id: ecommerce_source, table: slots, primary_key: [order],
     cursor: start, mode: incremental, overlap_seconds: 0}
"""


@pytest.mark.slow  # starts the fakesnow server
def test_columns_named_like_reserved_words_load_on_both_warehouses(
    postgres_side: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakesnow_server: int
) -> None:
    """``start`` and ``order`` are reserved words in Snowflake (and ``order`` in PostgreSQL): as
    key, cursor and data columns they load and merge, as in the source."""
    sources = tmp_path / "sources.yml"
    sources.write_text(RESERVED_SOURCES)
    snowflake_connection(
        monkeypatch, f"analytics_{uuid.uuid4().hex[:6]}", host="127.0.0.1", port=fakesnow_server, protocol="http"
    )
    with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
        conn.execute('CREATE TABLE slots ("order" bigint PRIMARY KEY, "start" timestamptz, "select" text)')
        conn.execute("INSERT INTO slots VALUES (1, '2025-01-01', 'a'), (2, '2025-01-02', 'b')")
    for warehouse in ("snowflake", "postgres"):
        extract("slots", warehouse=warehouse, batch_id="r1", config_path=sources)
    with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
        conn.execute("""UPDATE slots SET "select" = 'changed', "start" = '2025-02-01' WHERE "order" = 1""")

    reports = {w: extract("slots", warehouse=w, batch_id="r2", config_path=sources) for w in ("snowflake", "postgres")}

    assert {w: (r.mode, r.rows_merged) for w, r in reports.items()} == {
        "snowflake": ("incremental", 1),
        "postgres": ("incremental", 1),
    }
    expected = postgres_raw(postgres_side["warehouse_postgres"], "slots", '"order"')
    assert [(row[0], row[2]) for row in expected] == [(1, "changed"), (2, "b")]
    assert snowflake_raw("slots", '"ORDER"') == expected


def raw_keys(warehouse: str, dsns: dict[str, str]) -> list[tuple]:
    """``(item_id, sku)`` of raw.items on ``warehouse``, by key."""
    query = "SELECT item_id, sku FROM raw.items ORDER BY item_id"
    if warehouse == "snowflake":
        conn = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake").get_conn()
        try:
            return [tuple(row) for row in conn.cursor().execute(query).fetchall()]
        finally:
            conn.close()
    with psycopg.connect(dsns["warehouse_postgres"]) as conn:
        return conn.execute(query).fetchall()


def source_keys(dsns: dict[str, str]) -> list[tuple]:
    with psycopg.connect(dsns["ecommerce_source"]) as conn:
        return conn.execute("SELECT item_id, sku FROM items ORDER BY item_id").fetchall()


def run_on_warehouse(warehouse: str, dsns: dict[str, str], statement: str) -> None:
    if warehouse == "snowflake":
        conn = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake").get_conn()
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()
    else:
        with psycopg.connect(dsns["warehouse_postgres"]) as conn:
            conn.execute(statement)


@pytest.mark.parametrize("warehouse", ["postgres", "snowflake"])
def test_a_future_dated_row_does_not_hide_later_changes(
    postgres_side: dict[str, str], sources_file: Path, monkeypatch: pytest.MonkeyPatch, warehouse: str
) -> None:
    snowflake_connection(monkeypatch, "analytics")
    with fakesnow.patch():
        extract("items", warehouse=warehouse, batch_id="b1", config_path=sources_file)
        with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
            conn.execute("UPDATE items SET sku = 'SKU-1-future', updated_at = '2099-01-01' WHERE item_id = 1")
        dated = extract("items", warehouse=warehouse, batch_id="b2", config_path=sources_file)
        with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
            conn.execute("UPDATE items SET sku = 'SKU-2-later', updated_at = now() WHERE item_id = 2")
        extract("items", warehouse=warehouse, batch_id="b3", config_path=sources_file)
        assert raw_keys(warehouse, postgres_side) == source_keys(postgres_side)
    assert dated.future_rows == 1
    assert not dated.high_water.startswith("2099")


@pytest.mark.parametrize("warehouse", ["postgres", "snowflake"])
def test_a_truncated_raw_table_is_loaded_in_full_despite_its_mark(
    postgres_side: dict[str, str], sources_file: Path, monkeypatch: pytest.MonkeyPatch, warehouse: str
) -> None:
    snowflake_connection(monkeypatch, "analytics")
    with fakesnow.patch():
        first = extract("items", warehouse=warehouse, batch_id="b1", config_path=sources_file)
        with psycopg.connect(postgres_side["ecommerce_source"]) as conn:
            conn.execute(ONE_DAY_OF_CHANGES)
        run_on_warehouse(warehouse, postgres_side, "TRUNCATE TABLE raw.items")
        reload = extract("items", warehouse=warehouse, batch_id="b2", config_path=sources_file)
        assert raw_keys(warehouse, postgres_side) == source_keys(postgres_side)
    assert (reload.mode, reload.previous_high_water, reload.rows_read) == ("full", first.high_water, 501)
