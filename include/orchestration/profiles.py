"""dbt profiles from the warehouse Connections, chosen per run (Cosmos profile mappings).

Cosmos writes dbt's ``profiles.yml`` from an Airflow Connection when a task runs, with the
secrets passed as environment variables, so no credentials live in the repository. One mapping
per warehouse, and :class:`RunWarehouseProfileMapping` picks between them at run time, because the
warehouse is a run's choice (param or Variable) while Cosmos fixes the profile when the DAG is
parsed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cosmos.profiles import BaseProfileMapping, SnowflakeUserPasswordProfileMapping

from include.warehouses import WAREHOUSES, current_warehouse, warehouse

# Models name their schema (staging | intermediate | marts, see generate_schema_name); the target
# schema only holds what names none.
TARGET_SCHEMA = "marts"
THREADS = 4


# dbt-snowflake's connection retries, spelt out rather than left to its defaults: a Snowflake that
# refuses or fails logins fails the dbt invocation after one retry, a few seconds apart, instead of
# retrying every error (`retry_all`) with growing waits. `connect_timeout` is dbt-snowflake's wait
# between those attempts, not a network timeout: dbt-snowflake 1.11 passes the connector no
# login/network timeout, so a statement whose request keeps failing (HTTP 5xx) or gets no answer after
# a good login is retried by the connector for as long as the dbt process lives: the warehouse
# watchdog (include/orchestration/watchdog.py) ends that process within the Connection's
# ``unreachable_after``.
SNOWFLAKE_RETRIES: dict[str, Any] = {
    "connect_retries": 1,
    "connect_timeout": 5,
    "retry_on_database_errors": False,
    "retry_all": False,
}


class SnowflakeProfileMapping(SnowflakeUserPasswordProfileMapping):
    """The stock mapping, plus the ``protocol`` extra (``http`` for a local fakesnow server) and
    bounded connection retries (:data:`SNOWFLAKE_RETRIES`)."""

    airflow_param_mapping: ClassVar[dict[str, Any]] = {
        **SnowflakeUserPasswordProfileMapping.airflow_param_mapping,
        "protocol": "extra.protocol",
    }

    @property
    def profile(self) -> dict[str, Any]:
        profile = {**SNOWFLAKE_RETRIES, **super().profile}
        if profile.get("port") is not None:
            profile["port"] = int(profile["port"])
        return profile


def warehouse_profile_mapping(name: str) -> BaseProfileMapping:
    """dbt's profile for a warehouse (its registry entry names the mapping and the Connection)."""
    return warehouse(name).profile(schema=TARGET_SCHEMA, threads=THREADS)


class RunWarehouseProfileMapping(BaseProfileMapping):
    """Delegates to the mapping of the warehouse the running task's DAG run chose."""

    def __init__(self) -> None:
        super().__init__(conn_id="|".join(spec.conn_id for spec in WAREHOUSES.values()) + " (chosen per run)")

    @property
    def delegate(self) -> BaseProfileMapping:
        return warehouse_profile_mapping(current_warehouse())

    @property
    def dbt_profile_type(self) -> str:  # type: ignore[override]
        return self.delegate.dbt_profile_type

    @property
    def profile(self) -> dict[str, Any]:
        return self.delegate.profile

    @property
    def mock_profile(self) -> dict[str, Any]:
        return self.delegate.mock_profile

    @property
    def env_vars(self) -> dict[str, str]:
        return self.delegate.env_vars
