"""
### ecommerce_elt — the shop's daily ELT

1. **Health checks**: the shop's Postgres, the Stripe API and the marketing landing location
   answer through their Airflow Connections (clear messages when they do not).
2. **Extract-load**: one task per entry of `include/ingestion/sources.yml`, in parallel, into the
   warehouse's `raw` schema (incremental, idempotent; Postgres sources share the
   `ecommerce_source_db` pool).
3. **all_extractions_complete**: no transform runs on partial data.
4. **transform**: the dbt project rendered by Cosmos, one task per model with its tests after it.
   Clear a single model in the grid to rerun it alone.
5. **dbt_docs**: publishes the docs served under *Browse → dbt docs* (Cosmos plugin).
6. **notify_success**: a Slack summary (rows per source, rejects, models, tests, duration).

Failures and retries alert Slack (`slack_alerts`); the run must finish within the deadline of
`include/orchestration/policies.yml` (30 min), else a deadline alert fires.

Params: `warehouse` (`postgres` | `snowflake`; empty = the `ecommerce_warehouse` Variable),
`full_refresh` (reload raw and rebuild incremental models), `sources` (subset to extract; empty = all).
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference
from airflow.sdk.exceptions import AirflowSkipException

from include.ingestion.config import load_source_config
from include.orchestration.alerts import AlertKind, PipelineAlert, alert_deadline_missed
from include.orchestration.health import health_checks
from include.orchestration.policies import run_deadline, task_policy
from include.orchestration.transform import TRANSFORM_GROUP_ID, transform_task_group

SOURCES = load_source_config()


@dag(
    dag_id="ecommerce_elt",
    schedule="0 6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ecommerce", "elt", "dbt"],
    doc_md=__doc__,
    default_args={
        "owner": "data-platform",
        **task_policy("extraction").operator_kwargs(),
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
        "full_refresh": Param(False, type="boolean", description="reload raw and rebuild incremental models"),
        "sources": Param(
            [],
            type="array",
            items={"type": "string", "enum": [s.name for s in SOURCES]},
            description="sources to extract; empty: all",
        ),
    },
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=run_deadline(),
        callback=AsyncCallback(alert_deadline_missed),
    ),
)
def ecommerce_elt() -> None:
    @task(**task_policy("health_check").operator_kwargs())
    def validate_params() -> dict:
        from include.orchestration.elt import run_choices
        from include.warehouses import chosen_warehouse

        params = get_current_context()["params"]
        choices = run_choices(params)
        # resolved once: every later task of the run reads this, even if the Variable changes meanwhile
        warehouse = choices.warehouse or chosen_warehouse(params)
        return {"warehouse": warehouse, "full_refresh": choices.full_refresh, "sources": list(choices.sources)}

    checks = [
        task(task_id=f"check_{check.name}", **task_policy("health_check").operator_kwargs())(check.run)()
        for check in health_checks(SOURCES)
    ]

    @task(**task_policy("extraction").operator_kwargs())
    def extract(source: str, choices: dict) -> dict:
        from include.ingestion.pipeline import extract as extract_source
        from include.orchestration.elt import batch_id

        if source not in choices["sources"]:
            raise AirflowSkipException(f"{source} is not among this run's sources {choices['sources']}")
        context = get_current_context()
        ti = context["ti"]
        report = extract_source(
            source,
            warehouse=choices["warehouse"],
            full_refresh=choices["full_refresh"],
            batch_id=batch_id(context["run_id"], ti.task_id, ti.try_number),
        )
        return report.as_dict()

    @task(**task_policy("dbt_docs").operator_kwargs())
    def dbt_docs(choices: dict) -> str:
        from include.orchestration.docs import publish_docs

        return str(publish_docs(choices["warehouse"]))

    @task(**task_policy("notification").operator_kwargs())
    def notify_success(choices: dict) -> None:
        from include.orchestration.alerts import send
        from include.orchestration.elt import success_message

        context = get_current_context()
        ti, run = context["ti"], context["dag_run"]
        loads = {s.name: ti.xcom_pull(task_ids=f"extract_{s.name}") for s in SOURCES}
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run.run_id], task_group_id=TRANSFORM_GROUP_ID)
        message = success_message(
            ti.dag_id, run.run_id, run.start_date, loads, states.get(run.run_id, {}), choices["warehouse"]
        )
        send(message)

    choices = validate_params()
    extractions = [
        extract.override(task_id=f"extract_{source.name}", pool=getattr(source, "pool", None) or "default_pool")(
            source.name, choices
        )
        for source in SOURCES
    ]
    # Empty: the scheduler sets it without a worker process, one task start off the critical path.
    gate = EmptyOperator(
        task_id="all_extractions_complete",
        trigger_rule=TriggerRule.NONE_FAILED,
        doc_md="Done when no extraction failed (skipped ones were not selected this run).",
        **task_policy("gate").operator_kwargs(),
    )
    for check in checks:
        check >> extractions
    extractions >> gate >> transform_task_group() >> dbt_docs(choices) >> notify_success(choices)


ecommerce_elt()
