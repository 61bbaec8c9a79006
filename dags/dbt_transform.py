"""
### dbt_transform — the dbt stage alone

Rebuilds staging → intermediate → marts from what is already in `raw`, without extracting.
Use it after fixing a model, or to rebuild on the other warehouse. Every model is its own task
with its tests right after it; clear one model in the grid to rerun it alone.

Params: `warehouse` (`postgres` | `snowflake`; default: the `ecommerce_warehouse` Variable) and
`full_refresh` (rebuild incremental models from scratch).

Failures and retries alert Slack (`slack_alerts`) as the pipeline's do. Its `dbt build` and the
pipeline's never run at once: both producers take the one slot of the `dbt_build` pool
(`include/orchestration/policies.yml`, pool in `airflow_settings.yaml`), so a second build queues
until the first finished instead of racing it on the same models and `target/`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param

from include.orchestration.alerts import AlertKind, PipelineAlert
from include.orchestration.policies import task_policy
from include.orchestration.transform import transform_dag

dbt_transform = transform_dag(
    dag_id="dbt_transform",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ecommerce", "dbt"],
    doc_md=__doc__,
    default_args={
        "owner": "data-platform",
        **task_policy("dbt_model").operator_kwargs(),
        "on_failure_callback": PipelineAlert(AlertKind.FAILURE),
        "on_retry_callback": PipelineAlert(AlertKind.RETRY),
    },
    params={
        "warehouse": Param(
            None,
            type=["null", "string"],
            enum=[None, "postgres", "snowflake"],
            description="postgres | snowflake; empty: the ecommerce_warehouse Variable",
        ),
        "full_refresh": Param(False, type="boolean", description="rebuild incremental models from scratch"),
    },
)
