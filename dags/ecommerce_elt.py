"""
### ecommerce_elt (foundation placeholder)

Checks that the shop's source database and the warehouse answer through their Airflow
Connections. The extract → dbt → docs → notify pipeline replaces this body (issue 5).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule="0 6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ecommerce", "elt"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(minutes=5)},
)
def ecommerce_elt() -> None:
    @task(execution_timeout=timedelta(minutes=2))
    def check_databases() -> dict[str, str]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return {
            conn_id: str(PostgresHook(postgres_conn_id=conn_id).get_first("SELECT version()")[0])
            for conn_id in ("ecommerce_source", "warehouse_postgres")
        }

    check_databases()


ecommerce_elt()
