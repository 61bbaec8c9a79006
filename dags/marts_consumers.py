"""
### marts_consumers — runs when the marts change, not on a clock

Scheduled on the `fct_daily_revenue` mart's Asset (updated by `ecommerce_elt` and `dbt_transform`):
exports the daily revenue report as `daily_revenue_<date>.csv` to the location in the
`reports_url` Variable (`file://` locally, `s3://…` in production).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context, task

from include.orchestration.policies import task_policy
from include.orchestration.transform import MART_ASSETS


@dag(
    schedule=[MART_ASSETS["fct_daily_revenue"]],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["ecommerce", "reports"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", **task_policy("export").operator_kwargs()},
)
def marts_consumers() -> None:
    @task
    def export_daily_revenue_report() -> str:
        from airflow.sdk import ObjectStoragePath, Variable

        from include.orchestration.reports import daily_revenue_csv
        from include.warehouses import current_warehouse

        context = get_current_context()
        target = ObjectStoragePath(Variable.get("reports_url"))
        target.mkdir(parents=True, exist_ok=True)
        # asset-triggered runs have no logical date: name the file after when the run was due
        report = target / f"daily_revenue_{context['dag_run'].run_after.date().isoformat()}.csv"
        report.write_text(daily_revenue_csv(current_warehouse()))
        return str(report)

    export_daily_revenue_report()


marts_consumers()
