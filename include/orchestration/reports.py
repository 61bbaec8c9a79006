"""Reports built from the marts for people outside the warehouse (the ``marts_consumers`` DAG)."""

from __future__ import annotations

import csv
import io

from include.warehouses import warehouse as warehouse_spec

DAILY_REVENUE_COLUMNS = ("order_date", "order_count", "gross_amount", "discount_amount", "net_amount", "amount_paid")


def daily_revenue_csv(warehouse: str) -> str:
    """``marts.fct_daily_revenue`` as CSV text, oldest day first, through the warehouse's Connection."""
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(warehouse_spec(warehouse).conn_id).get_hook()
    rows = hook.get_records(
        f"SELECT {', '.join(DAILY_REVENUE_COLUMNS)} FROM marts.fct_daily_revenue ORDER BY order_date"
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DAILY_REVENUE_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()
