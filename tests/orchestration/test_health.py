"""Source health checks pass on healthy sources and fail with messages that name the fix."""

from __future__ import annotations

import pytest

from dev.airflow_settings import ConnectionSpec
from dev.embedded_postgres import find_free_port
from include.ingestion.config import load_source_config
from include.orchestration.health import SourceUnhealthy, check_landing, check_postgres, health_checks


def use_postgres_connection(monkeypatch, conn_id: str, dsn_port: int, password: str = "postgres") -> None:
    spec = ConnectionSpec(conn_id, "postgres", "127.0.0.1", dsn_port, "postgres", "postgres", password)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", spec.to_env_value())


def test_one_check_per_distinct_source() -> None:
    names = [check.name for check in health_checks(load_source_config())]
    assert names == ["ecommerce_source", "stripe_api", "marketing_spend_landing"]


def test_reachable_database_passes(monkeypatch, postgres_server) -> None:
    use_postgres_connection(monkeypatch, "ecommerce_source", postgres_server.port, postgres_server.password)
    assert "PostgreSQL 16" in check_postgres("ecommerce_source")


def test_unreachable_database_names_the_connection(monkeypatch) -> None:
    use_postgres_connection(monkeypatch, "ecommerce_source", find_free_port())
    with pytest.raises(SourceUnhealthy, match="Source database 'ecommerce_source' is unreachable.*host, port"):
        check_postgres("ecommerce_source")


def test_wrong_password_fails_without_showing_it(monkeypatch, postgres_server) -> None:
    use_postgres_connection(monkeypatch, "ecommerce_source", postgres_server.port, "not-the-password-123")
    with pytest.raises(SourceUnhealthy) as failure:
        check_postgres("ecommerce_source")
    assert "not-the-password-123" not in str(failure.value)


def test_landing_location(monkeypatch, tmp_path) -> None:
    (tmp_path / "marketing_spend_2026-01-01.csv").write_text("date\n")
    monkeypatch.setenv("AIRFLOW_VAR_MARKETING_LANDING_URL", f"file://{tmp_path}")
    assert "1 file(s)" in check_landing("marketing_landing_url", "marketing_spend_*.csv")

    monkeypatch.setenv("AIRFLOW_VAR_MARKETING_LANDING_URL", f"file://{tmp_path}/missing")
    with pytest.raises(SourceUnhealthy, match="does not exist.*Variable"):
        check_landing("marketing_landing_url", "marketing_spend_*.csv")


def source_with(monkeypatch, postgres_server, new_database, ddl: str) -> None:
    """A fresh database holding ``ddl``, as the ``ecommerce_source`` Connection."""
    import psycopg

    dsn = new_database("health")
    with psycopg.connect(dsn) as conn:
        conn.execute(ddl)
    spec = ConnectionSpec(
        "ecommerce_source",
        "postgres",
        "127.0.0.1",
        postgres_server.port,
        dsn.rsplit("/", 1)[1],
        "postgres",
        postgres_server.password,
    )
    monkeypatch.setenv("AIRFLOW_CONN_ECOMMERCE_SOURCE", spec.to_env_value())


GOOD_ORDERS = "CREATE TABLE orders (order_id bigint PRIMARY KEY, status text, updated_at timestamptz)"


def orders_entry(**changes):
    from dataclasses import replace

    from include.ingestion.config import source_entry

    return replace(source_entry("orders"), **changes)


def test_a_runnable_entry_passes(monkeypatch, postgres_server, new_database) -> None:
    source_with(monkeypatch, postgres_server, new_database, GOOD_ORDERS)
    assert "PostgreSQL" in check_postgres("ecommerce_source", (orders_entry(),))


@pytest.mark.parametrize(
    ("ddl", "changes", "expected"),
    [
        (
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, updated_at bigint)",
            {},
            r"source 'orders': `cursor` 'updated_at' is bigint of public.orders.*timestamp column.*set `cursor`",
        ),
        (GOOD_ORDERS, {"cursor": "status"}, r"source 'orders': `cursor` 'status' is text"),
        (
            "CREATE TABLE orders (order_id bigint, updated_at timestamptz)",
            {},
            r"source 'orders': `primary_key` \(order_id\) is not unique in public.orders.*add a unique index",
        ),
        (
            GOOD_ORDERS + "; CREATE TABLE order_lines (order_id bigint, updated_at timestamptz)",
            {"table": "order_lines"},
            r"`primary_key` \(order_id\) is not unique in public.order_lines",
        ),
    ],
    ids=["integer_cursor", "text_cursor", "key_without_unique_index", "other_table"],
)
def test_configuration_that_cannot_run_fails_naming_entry_key_and_fix(
    monkeypatch, postgres_server, new_database, ddl, changes, expected
) -> None:
    source_with(monkeypatch, postgres_server, new_database, ddl)
    with pytest.raises(SourceUnhealthy, match=expected):
        check_postgres("ecommerce_source", (orders_entry(**changes),))


def test_a_composite_key_with_a_unique_index_on_part_of_it_passes(monkeypatch, postgres_server, new_database) -> None:
    source_with(monkeypatch, postgres_server, new_database, GOOD_ORDERS)
    assert check_postgres("ecommerce_source", (orders_entry(primary_key=("order_id", "status")),))


def test_a_file_pattern_matching_no_file_fails_but_loaded_files_pass(monkeypatch, tmp_path) -> None:
    (tmp_path / "marketing_spend_2026-01-01.csv").write_text("date\n")
    monkeypatch.setenv("AIRFLOW_VAR_MARKETING_LANDING_URL", f"file://{tmp_path}")
    with pytest.raises(
        SourceUnhealthy,
        match=r"source 'marketing_spend': `file_pattern` 'spend_\*.csv' matches no "
        r"file.*marketing_spend_2026-01-01.csv.*fix `file_pattern`",
    ):
        check_landing("marketing_landing_url", "spend_*.csv", source="marketing_spend")
    # the same files again (all loaded before) are "no new files": the extraction's business
    assert "1 file(s)" in check_landing("marketing_landing_url", "marketing_spend_*.csv", source="marketing_spend")


def test_the_source_check_covers_every_postgres_entry(monkeypatch, postgres_server, new_database) -> None:
    tables = ("customers", "products", "orders", "order_items")
    ddl = "; ".join(f"CREATE TABLE {t} ({t.rstrip('s')}_id bigint PRIMARY KEY, updated_at timestamptz)" for t in tables)
    source_with(
        monkeypatch,
        postgres_server,
        new_database,
        ddl.replace("order_items (order_item_id", "order_items (x bigint, order_item_id"),
    )
    [source] = [check for check in health_checks(load_source_config()) if check.name == "ecommerce_source"]
    source.run()
    source_with(
        monkeypatch,
        postgres_server,
        new_database,
        ddl.replace("order_item_id bigint PRIMARY KEY", "order_item_id bigint"),
    )
    with pytest.raises(SourceUnhealthy, match="source 'order_items': `primary_key`"):
        source.run()


def test_landing_errors_do_not_show_the_urls_credentials(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MARKETING_LANDING_URL", "s3://AKIAEXAMPLE:Landing-Secret-9@bucket/landing")
    with pytest.raises(SourceUnhealthy) as failure:
        check_landing("marketing_landing_url", "marketing_spend_*.csv", source="marketing_spend")
    assert "Landing-Secret-9" not in str(failure.value) and "bucket/landing" in str(failure.value)
