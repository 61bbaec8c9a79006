"""dbt profiles from the warehouse Connections, chosen per run (Cosmos profile mappings).

Cosmos writes dbt's ``profiles.yml`` from an Airflow Connection when a task runs, with the
secrets passed as environment variables, so no credentials live in the repository. One mapping
per warehouse, and :class:`RunWarehouseProfileMapping` picks between them at run time, because the
warehouse is a run's choice (param or Variable) while Cosmos fixes the profile when the DAG is
parsed.
"""

from __future__ import annotations

from typing import Any

from cosmos.profiles import BaseProfileMapping, PostgresUserPasswordProfileMapping, SnowflakeUserPasswordProfileMapping

from include.orchestration.warehouse import WAREHOUSE_CONN_IDS, current_warehouse

# Models name their schema (staging | intermediate | marts, see generate_schema_name); the target
# schema only holds what names none.
TARGET_SCHEMA = "marts"
THREADS = 4


class SnowflakeProfileMapping(SnowflakeUserPasswordProfileMapping):
    """The stock mapping, plus the ``protocol`` extra (``http`` for a local fakesnow server)."""

    airflow_param_mapping = {**SnowflakeUserPasswordProfileMapping.airflow_param_mapping, "protocol": "extra.protocol"}

    @property
    def profile(self) -> dict[str, Any]:
        profile = super().profile
        if profile.get("port") is not None:
            profile["port"] = int(profile["port"])
        return profile


def warehouse_profile_mapping(warehouse: str) -> BaseProfileMapping:
    profile_args = {"schema": TARGET_SCHEMA, "threads": THREADS}
    if warehouse == "snowflake":
        return SnowflakeProfileMapping(conn_id=WAREHOUSE_CONN_IDS["snowflake"], profile_args=profile_args)
    return PostgresUserPasswordProfileMapping(conn_id=WAREHOUSE_CONN_IDS["postgres"], profile_args=profile_args)


class RunWarehouseProfileMapping(BaseProfileMapping):
    """Delegates to the mapping of the warehouse the running task's DAG run chose."""

    def __init__(self) -> None:
        super().__init__(conn_id="warehouse_postgres|warehouse_snowflake (chosen per run)")

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
