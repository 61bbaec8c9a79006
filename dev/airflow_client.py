"""A small client for Airflow's REST API (v2) on the local stack.

The local API server runs with ``simple_auth_manager_all_admins``, so no token is needed.
Used by ``make run`` to run the pipeline once, and by tests and benchmarks that drive the
real scheduler.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

FINISHED_STATES = {"success", "failed"}


def api(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{base_url}/api/v2{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def wait_for_dag(base_url: str, dag_id: str, timeout_s: float = 180) -> None:
    """Wait until the DAG processor has parsed ``dag_id`` (fail with its import errors if not)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            api(base_url, "GET", f"/dags/{dag_id}")
            return
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
        time.sleep(1)
    errors = api(base_url, "GET", "/importErrors").get("import_errors", [])
    details = "\n".join(f"{e['filename']}: {e['stack_trace'][-500:]}" for e in errors) or "no import errors"
    raise RuntimeError(f"DAG {dag_id} did not appear within {timeout_s:.0f}s. Import errors:\n{details}")


def trigger(base_url: str, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """Unpause and trigger ``dag_id``; returns the run id."""
    api(base_url, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
    run = api(base_url, "POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
    return str(run["dag_run_id"])


def wait_for_run(base_url: str, dag_id: str, run_id: str, timeout_s: float = 1800) -> str:
    """Poll until the run finishes; returns its final state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = api(base_url, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in FINISHED_STATES:
            return str(state)
        time.sleep(2)
    raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout_s:.0f}s")


def task_states(base_url: str, dag_id: str, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in task_instances(base_url, dag_id, run_id)}


def task_instances(base_url: str, dag_id: str, run_id: str, page_size: int = 100) -> list[dict[str, Any]]:
    """Every task instance of the run as the API gives it (state, start_date, end_date, pid ...),
    page by page: the API caps a page at 100 entries."""
    instances: list[dict[str, Any]] = []
    while True:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit={page_size}&offset={len(instances)}"
        page = api(base_url, "GET", path)
        instances += page["task_instances"]
        if not page["task_instances"] or len(instances) >= page["total_entries"]:
            return instances


def clear_tasks(base_url: str, dag_id: str, run_id: str, task_ids: list[str]) -> None:
    """What *Clear → with downstream* does in the grid: rerun these tasks and everything after them."""
    body = {
        "dag_run_id": run_id,
        "task_ids": task_ids,
        "include_downstream": True,
        "only_failed": False,
        "dry_run": False,
        "reset_dag_runs": True,
    }
    api(base_url, "POST", f"/dags/{dag_id}/clearTaskInstances", body)


def run_dag_and_wait(base_url: str, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """Trigger a run, wait for it, print a one-line summary per state; returns the final state."""
    wait_for_dag(base_url, dag_id)
    started = time.monotonic()
    run_id = trigger(base_url, dag_id, conf)
    print(f"Triggered {dag_id} ({run_id}); waiting for it to finish ...", flush=True)
    state = wait_for_run(base_url, dag_id, run_id)
    counts: dict[str, int] = {}
    for task_state in task_states(base_url, dag_id, run_id).values():
        counts[str(task_state)] = counts.get(str(task_state), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{dag_id} {state} in {time.monotonic() - started:.0f}s ({summary})")
    return state
