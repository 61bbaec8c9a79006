"""Which warehouse a run writes to: a DAG param first, then the ``ecommerce_warehouse`` Variable.

The contract says the warehouse is chosen in Airflow, never in code. Both the extraction tasks and
the dbt tasks ask :func:`current_warehouse` at run time (never at DAG parse time: Variables are
not readable at a DAG file's top level on Airflow 3).
"""

from __future__ import annotations

from typing import Any

WAREHOUSE_VARIABLE = "ecommerce_warehouse"
DEFAULT_WAREHOUSE = "postgres"
WAREHOUSE_CONN_IDS = {"postgres": "warehouse_postgres", "snowflake": "warehouse_snowflake"}


class UnknownWarehouse(ValueError):
    """A param or Variable names a warehouse the project does not know."""


def validate_warehouse(name: Any, origin: str = "warehouse") -> str:
    if name not in WAREHOUSE_CONN_IDS:
        raise UnknownWarehouse(
            f"{origin}={name!r} is not a known warehouse: use one of {', '.join(WAREHOUSE_CONN_IDS)}."
        )
    return str(name)


def current_warehouse(params: dict[str, Any] | None = None) -> str:
    """The run's warehouse: ``params['warehouse']`` when set, else the Variable, else postgres.

    Without ``params`` it reads them from the running task's context, so code deep inside a Cosmos
    operator (the profile mapping) can ask too.
    """
    if params is None:
        params = _running_task_params()
    if params.get("warehouse"):
        return validate_warehouse(params["warehouse"], "param warehouse")
    from airflow.sdk import Variable

    return validate_warehouse(
        Variable.get(WAREHOUSE_VARIABLE, default=DEFAULT_WAREHOUSE), f"Variable {WAREHOUSE_VARIABLE}"
    )


def _running_task_params() -> dict[str, Any]:
    try:
        from airflow.sdk import get_current_context

        return dict(get_current_context().get("params") or {})
    except Exception:
        return {}
