"""The warehouses a run can write to, and which one a run chose: the one registry of both.

Extract-load, the dbt tasks, the docs, the reports and the alerts all read :data:`WAREHOUSES`
(name → Connection → extract-load writer → dbt profile mapping), so adding a warehouse is one
entry here plus its writer and mapping classes. ``docs/contract.md`` fixes the Connection ids.

The warehouse is chosen in Airflow, never in code: the ``warehouse`` param of a run, else the
``ecommerce_warehouse`` Variable, else postgres. The pipeline resolves that once, in its
``validate_params`` task, and passes the name on; code that runs inside Cosmos's operators (the
profile mapping) asks :func:`current_warehouse`, which reads the same decision back. Nothing here
reads a Variable at import time: on Airflow 3 a DAG file's top level cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosmos.profiles import BaseProfileMapping

    from include.ingestion.warehouse.base import Warehouse

WAREHOUSE_VARIABLE = "ecommerce_warehouse"
DEFAULT_WAREHOUSE = "postgres"
# The task that resolves a pipeline run's choices (dags/ecommerce_elt.py); its XCom carries them.
CHOICES_TASK_ID = "validate_params"


@dataclass(frozen=True)
class WarehouseSpec:
    """One warehouse.

    :param name: what the ``warehouse`` param and the ``ecommerce_warehouse`` Variable say.
    :param conn_id: its Airflow Connection.
    :param writer: the extract-load writer class (``module:Class``, imported when used).
    :param profile_mapping: the Cosmos profile mapping dbt's profile is written with (``module:Class``).
    """

    name: str
    conn_id: str
    writer: str
    profile_mapping: str

    def load_writer(self) -> Warehouse:
        """The extract-load writer on this warehouse's Connection."""
        return _import(self.writer)(self.conn_id)

    def profile(self, **profile_args: Any) -> BaseProfileMapping:
        """dbt's profile for this warehouse's Connection."""
        return _import(self.profile_mapping)(conn_id=self.conn_id, profile_args=profile_args)


WAREHOUSES: Mapping[str, WarehouseSpec] = {
    spec.name: spec
    for spec in (
        WarehouseSpec(
            "postgres",
            "warehouse_postgres",
            "include.ingestion.warehouse.postgres:PostgresWarehouse",
            "cosmos.profiles:PostgresUserPasswordProfileMapping",
        ),
        WarehouseSpec(
            "snowflake",
            "warehouse_snowflake",
            "include.ingestion.warehouse.snowflake:SnowflakeWarehouse",
            "include.orchestration.profiles:SnowflakeProfileMapping",
        ),
    )
}


class UnknownWarehouse(ValueError):
    """A param or Variable names a warehouse the project does not know."""


def warehouse(name: Any, origin: str = "warehouse") -> WarehouseSpec:
    """The registry's entry for ``name``; ``origin`` names where the name came from in the error."""
    if name not in WAREHOUSES:
        raise UnknownWarehouse(f"{origin}={name!r} is not a known warehouse: use one of {', '.join(WAREHOUSES)}.")
    return WAREHOUSES[name]


def chosen_warehouse(params: Mapping[str, Any]) -> str:
    """A run's choice from its params: ``params['warehouse']`` when set, else the Variable, else postgres."""
    if params.get("warehouse"):
        return warehouse(params["warehouse"], "param warehouse").name
    from airflow.sdk import Variable

    return warehouse(Variable.get(WAREHOUSE_VARIABLE, default=DEFAULT_WAREHOUSE), f"Variable {WAREHOUSE_VARIABLE}").name


def current_warehouse() -> str:
    """The running task's warehouse: what its pipeline run resolved (:data:`CHOICES_TASK_ID`), else
    (a DAG without that task, e.g. the transform-only one) the run's params and the Variable."""
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
    except Exception:  # not inside a task (e.g. a script rendering the profile): no run chose yet
        return chosen_warehouse({})
    task = context["ti"].task
    if task.dag is not None and CHOICES_TASK_ID in task.dag.task_ids:
        choices = context["ti"].xcom_pull(task_ids=CHOICES_TASK_ID)
        if isinstance(choices, dict) and choices.get("warehouse"):
            return warehouse(choices["warehouse"], f"XCom of {CHOICES_TASK_ID}").name
    return chosen_warehouse(context.get("params") or {})


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)
