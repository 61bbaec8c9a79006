"""Source freshness checked by the dbt stage's producer itself, without a second dbt start-up.

Cosmos's WATCHER producer runs ``dbt source freshness`` before its ``dbt build`` when it renders
sources: a second dbt start-up and project parse on the stage's critical path, for one small query
per source. Here the producer's ``pre_execute`` hook (:func:`check_before_build`) runs those queries
on the run's warehouse Connection and does with the results what Cosmos's pre-step does:

- each source's status is published as the producer's result for that node, so each source's task
  ends with it (``pass`` and ``warn`` succeed; ``error`` and ``runtime error`` fail the task on a
  worker, with the check in its log and the failure alert);
- the models that read nothing but sources in error (or models left out so) are left out of the
  build (``--exclude``) and published as skipped, so their tasks and their tests' tasks end
  skipped: stale data is not built on (Cosmos's own rule for its pre-step, :func:`left_out`).

The check is dbt's own (``collect_freshness`` and ``FreshnessThreshold.status`` in dbt-core), with
the thresholds the project declares (``freshness:``, ``loaded_at_field`` or ``loaded_at_query`` in the
sources' YAML, read from the manifest): the newest ``loaded_at_field`` (under the declared ``filter``)
against the warehouse's ``current_timestamp`` in the same query; no row at all is infinitely old; a
timestamp without a time zone is UTC; past ``error_after`` is ``error``, else past ``warn_after`` is
``warn``. Unlike Cosmos's default (which also skips on ``warn``), a warning only warns, as in dbt.
A retried source task runs the real ``dbt source freshness --select source:<name>`` (Cosmos's fallback).

``TransformSettings.freshness_in_producer=False`` goes back to Cosmos's pre-step.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.ingestion.warehouse.base import Warehouse

log = logging.getLogger(__name__)

PASS, WARN, ERROR, RUNTIME_ERROR = "pass", "warn", "error", "runtime error"  # dbt's FreshnessStatus values
# What leaves a source's readers out of the build (dbt: a warning is a warning).
STALE = frozenset({ERROR, RUNTIME_ERROR})
# Node types the build leaves out for a stale source, as Cosmos's pre-step does (tests follow their models).
_EXCLUDABLE = ("model", "seed", "snapshot")
_PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_INFINITELY_OLD = datetime(1, 1, 1, tzinfo=UTC)  # dbt's reading of no rows


@dataclass(frozen=True)
class DeclaredFreshness:
    """One source's freshness, as its YAML declares it.

    :param unique_id: dbt's id (``source.<project>.<source>.<table>``).
    :param schema: the source's schema; the table is looked up in the Connection's database, as
        dbt's target database is that Connection's.
    :param identifier: the source's table.
    :param loaded_at: the SQL expression of ``loaded_at_field``, or None with ``loaded_at_query``.
    :param loaded_at_query: dbt's custom freshness SQL (one value: the newest load), if declared.
    :param filter: the declared ``freshness.filter`` (a SQL condition), if any.
    :param warn_after_s: seconds after which the source warns; None: never.
    :param error_after_s: seconds after which the source is in error; None: never.
    """

    unique_id: str
    schema: str
    identifier: str
    loaded_at: str | None
    loaded_at_query: str | None
    filter: str | None
    warn_after_s: float | None
    error_after_s: float | None

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.identifier}"

    def status(self, age_s: float) -> str:
        """dbt's ``FreshnessThreshold.status``: the error threshold first, strictly past it."""
        if self.error_after_s is not None and age_s > self.error_after_s:
            return ERROR
        if self.warn_after_s is not None and age_s > self.warn_after_s:
            return WARN
        return PASS

    def query(self, relation: str) -> str:
        """dbt's ``collect_freshness`` (or its custom-SQL form) for this source."""
        if self.loaded_at_query:
            return (
                f"with source_query as ({self.loaded_at_query}) "
                "select (select * from source_query) as max_loaded_at, current_timestamp as snapshotted_at"
            )
        where = f" where {self.filter}" if self.filter else ""
        return (
            f"select max({self.loaded_at}) as max_loaded_at, current_timestamp as snapshotted_at from {relation}{where}"
        )


@dataclass(frozen=True)
class FreshnessResult:
    """One source's check: its status and what it was computed from (None: the query failed)."""

    source: DeclaredFreshness
    status: str
    max_loaded_at: datetime | None = None
    age_s: float | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"source {self.source.name}: {self.status} ({self.error})"
        newest = (
            "no rows"
            if self.max_loaded_at == _INFINITELY_OLD
            else f"newest load {self.max_loaded_at:%Y-%m-%d %H:%M:%S %Z}"
        )
        limits = ", ".join(
            f"{label} after {_hours(seconds)}"
            for label, seconds in (("warn", self.source.warn_after_s), ("error", self.source.error_after_s))
            if seconds is not None
        )
        return f"source {self.source.name}: {self.status} ({newest}, {_hours(self.age_s or 0)} old; {limits})"


def declared_freshness(manifest: Mapping[str, Any], unique_ids: Iterable[str] | None = None) -> list[DeclaredFreshness]:
    """The sources (of ``unique_ids``, by default all) that declare a threshold and what to measure."""
    wanted = None if unique_ids is None else set(unique_ids)
    declared = []
    for unique_id, source in sorted(manifest.get("sources", {}).items()):
        if wanted is not None and unique_id not in wanted:
            continue
        freshness = source.get("freshness") or {}
        warn, error = _seconds(freshness.get("warn_after")), _seconds(freshness.get("error_after"))
        loaded_at, loaded_at_query = source.get("loaded_at_field"), source.get("loaded_at_query")
        if (warn is None and error is None) or not (loaded_at or loaded_at_query):
            continue  # dbt checks nothing for it either (bar warehouse metadata, which the YAML does not ask for)
        declared.append(
            DeclaredFreshness(
                unique_id=unique_id,
                schema=source["schema"],
                identifier=source.get("identifier") or source["name"],
                loaded_at=loaded_at,
                loaded_at_query=loaded_at_query,
                filter=freshness.get("filter"),
                warn_after_s=warn,
                error_after_s=error,
            )
        )
    return declared


def check(warehouse: Warehouse, sources: Sequence[DeclaredFreshness]) -> list[FreshnessResult]:
    """Each source's freshness on ``warehouse``, over one connection; a query that fails (e.g. the
    table is missing) is that source's ``runtime error``, as in dbt, and does not stop the others."""
    if not sources:
        return []
    results = []
    connection = warehouse.connect()
    try:
        for source in sources:
            cursor = connection.cursor()
            try:
                cursor.execute(source.query(warehouse.relation(source.schema, source.identifier)))
                max_loaded_at, snapshotted_at = cursor.fetchone()
            except Exception as error:  # the warehouse's own message names the relation or column
                with contextlib.suppress(Exception):
                    connection.rollback()  # Postgres: the failed statement aborted the transaction
                results.append(FreshnessResult(source, RUNTIME_ERROR, error=f"{type(error).__name__}: {error}".strip()))
                continue
            finally:
                cursor.close()
            newest = _INFINITELY_OLD if max_loaded_at is None else _utc(max_loaded_at)
            age = (_utc(snapshotted_at) - newest).total_seconds()
            results.append(FreshnessResult(source, source.status(age), newest, age))
    finally:
        connection.close()
    return results


def left_out(
    child_map: Mapping[str, Sequence[str]], resource_types: Mapping[str, str], stale: Iterable[str]
) -> list[str]:
    """The models (seeds, snapshots) whose every parent is a stale source or left out itself:
    Cosmos's rule for its pre-step (a node with one clean parent still runs)."""
    parents: dict[str, set[str]] = {}
    for parent, children in child_map.items():
        for child in children:
            parents.setdefault(child, set()).add(parent)
    out: set[str] = set()
    stale = set(stale)
    todo = list(stale)
    while todo:
        for child in child_map.get(todo.pop(), ()):
            if child in out or resource_types.get(child) not in _EXCLUDABLE:
                continue
            if parents[child] <= stale | out:
                out.add(child)
                todo.append(child)
    return sorted(out)


def check_before_build(context: Any) -> None:
    """The producer's ``pre_execute``: check the sources whose tasks watch it, publish their
    statuses, and leave the readers of stale ones out of its build (module docstring)."""
    from cosmos.dbt.graph import DbtNode
    from cosmos.operators._watcher.aggregation import get_tests_status_xcom_key
    from cosmos.operators._watcher.state import get_status_xcom_key, safe_xcom_push

    from include.orchestration.consumers import SourceConsumer
    from include.warehouses import current_warehouse, warehouse

    ti, producer = context["ti"], context["task"]
    if ti.try_number > 1:
        return  # Cosmos's producer skips a second try; its consumers then run their nodes themselves
    watched = {
        task.model_unique_id
        for task in producer.dag.tasks
        if isinstance(task, SourceConsumer) and task.producer_task_id == producer.task_id
    }
    if not watched:
        return
    manifest = json.loads((Path(producer.project_dir) / "target" / "manifest.json").read_text())
    results = check(warehouse(current_warehouse()).load_writer(), declared_freshness(manifest, watched))
    for result in results:
        (log.warning if result.status != PASS else log.info)("Freshness of %s", result.describe())
        safe_xcom_push(ti, get_status_xcom_key(result.source.unique_id), {"status": result.status, "outlet_uris": []})
    stale = [result.source.unique_id for result in results if result.status in STALE]
    if not stale:
        return
    types = {uid: node["resource_type"] for uid, node in manifest.get("nodes", {}).items()}
    skipped = left_out(manifest.get("child_map", {}), types, stale)
    for unique_id in skipped:  # the model's task and its tests' task end skipped
        safe_xcom_push(ti, get_status_xcom_key(unique_id), {"status": "skipped", "outlet_uris": []})
        safe_xcom_push(ti, get_tests_status_xcom_key(unique_id), "skipped")
    if skipped:
        names = sorted({DbtNode.get_resource_name_from_unique_id(uid) for uid in skipped})
        log.warning("Left out of the build, as they read only stale sources: %s", " ".join(names))
        producer.exclude = " ".join(filter(None, [producer.exclude, *names]))


def _seconds(threshold: Mapping[str, Any] | None) -> float | None:
    if not threshold or threshold.get("count") is None or threshold.get("period") is None:
        return None
    return float(threshold["count"]) * _PERIOD_SECONDS[threshold["period"]]


def _utc(moment: datetime) -> datetime:
    """dbt's ``_utc``: a timestamp without a time zone is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"
