"""What the ``ecommerce_elt`` DAG's tasks do, kept out of the DAG file so it can be unit-tested.

Params are validated before anything is extracted (a typo in ``sources`` must not silently load
nothing), each extraction task resolves its run's choices here, and the success summary is built
from what the tasks reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from include.ingestion.config import load_source_config
from include.orchestration.alerts import AlertKind, SlackMessage, format_duration
from include.warehouses import UnknownWarehouse
from include.warehouses import warehouse as warehouse_spec


class InvalidRunParams(ValueError):
    """A run's params name something the pipeline does not have; the message lists what it has."""


@dataclass(frozen=True)
class RunChoices:
    warehouse: str | None  # None: the ecommerce_warehouse Variable decides
    full_refresh: bool
    sources: tuple[str, ...]  # the sources to extract this run

    def extracts(self, source: str) -> bool:
        return source in self.sources


def source_names() -> tuple[str, ...]:
    return tuple(entry.name for entry in load_source_config())


def run_choices(params: dict[str, Any]) -> RunChoices:
    """The run's params, checked: ``warehouse``, ``full_refresh`` and the ``sources`` subset."""
    known = source_names()
    warehouse = params.get("warehouse") or None
    if warehouse is not None:
        try:
            warehouse_spec(warehouse, "param warehouse")
        except UnknownWarehouse as error:
            raise InvalidRunParams(str(error)) from None
    full_refresh = params.get("full_refresh", False)
    if not isinstance(full_refresh, bool):
        raise InvalidRunParams(f"param full_refresh={full_refresh!r} must be true or false.")
    wanted = params.get("sources") or []
    if isinstance(wanted, str) or not all(isinstance(name, str) for name in wanted):
        raise InvalidRunParams(f'param sources={wanted!r} must be a list of source names, e.g. ["orders"].')
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise InvalidRunParams(
            f"param sources names unknown source(s) {', '.join(unknown)}: choose from {', '.join(known)} "
            "(or leave it empty for all)."
        )
    return RunChoices(warehouse, full_refresh, tuple(wanted) or known)


def batch_id(run_id: str, task_id: str, try_number: int) -> str:
    """``_batch_id`` of the rows a task try writes: which run, task and try changed a raw row."""
    return f"{run_id}/{task_id}/{try_number}"


def success_message(
    dag_id: str,
    run_id: str,
    started: datetime | None,
    loads: dict[str, dict[str, Any] | None],
    task_states: dict[str, str],
    warehouse: str,
) -> SlackMessage:
    """The run summary: rows per source, rejects, models built, tests passed, duration."""
    duration = (datetime.now(UTC) - started).total_seconds() if started else 0.0
    from include.orchestration.transform import node_kind

    succeeded = [node_kind(task) for task, state in task_states.items() if state == "success"]
    models, tests = succeeded.count("model"), succeeded.count("test")
    rows = {name: report["rows_merged"] for name, report in loads.items() if report}
    rejects = sum(report.get("rows_rejected", 0) for report in loads.values() if report)
    facts = {
        "Warehouse": f"{warehouse} ({warehouse_spec(warehouse).conn_id})",
        "Duration": format_duration(duration),
        "Rows loaded": ", ".join(f"{name} {count:,}" for name, count in rows.items()) or "none",
        "Rejected rows": f"{rejects:,}",
        "Rows read (loaded + rejected)": ", ".join(
            f"{name} {_accounted(report)}" for name, report in loads.items() if report
        )
        or "none",
        "Models built": str(models),
        "Tests passed": str(tests),
        "Skipped sources": ", ".join(name for name, report in loads.items() if report is None) or "none",
        "Run": run_id,
    }
    future = {name: report["future_rows"] for name, report in loads.items() if report and report.get("future_rows")}
    if future:  # loaded, but the high-water mark cannot follow them: the source should fix them
        facts["Future-dated rows"] = ", ".join(f"{name} {count:,}" for name, count in future.items())
    return SlackMessage(AlertKind.SUCCESS, f"{dag_id} succeeded", facts)


def _accounted(report: dict[str, Any]) -> str:
    """``read (loaded + rejected)`` of one load, so a row that vanished between them would show."""
    read, rejected = report.get("rows_read", 0), report.get("rows_rejected", 0)
    loaded = report.get("rows_loaded")
    loaded = read - rejected if loaded is None else loaded
    return f"{read:,} ({loaded:,} + {rejected:,})"
