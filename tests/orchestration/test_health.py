"""Source health checks pass on healthy sources and fail with messages that name the fix."""

from __future__ import annotations

import pytest

from include.dev.airflow_settings import ConnectionSpec
from include.dev.embedded_postgres import find_free_port
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
