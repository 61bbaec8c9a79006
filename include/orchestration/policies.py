"""Retry, timeout and deadline policies per task type, read from ``policies.yml``.

Why data, not keyword arguments scattered over DAG files: an operator tunes "extraction retries"
or "the run deadline" in one file, and every task of that type follows. Tasks take their
arguments from :func:`task_policy`; a typo in the file fails the DAG import with a message
naming the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# Another file can be swapped in (e.g. tests with second-long retry delays); the default is the
# one next to this module.
POLICIES_FILE = Path(os.environ.get("ECOMMERCE_POLICIES_FILE") or Path(__file__).with_name("policies.yml"))


class PolicyError(ValueError):
    """policies.yml names an unknown task type or key, or holds a bad value."""


@dataclass(frozen=True)
class TaskPolicy:
    retries: int
    retry_delay: timedelta
    execution_timeout: timedelta
    retry_exponential_backoff: bool = False
    max_retry_delay: timedelta | None = None
    pool: str | None = None  # e.g. dbt_build: one Airflow pool serialises builds across DAGs

    def operator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any Airflow operator (or ``default_args``)."""
        kwargs: dict[str, Any] = {
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "execution_timeout": self.execution_timeout,
            "retry_exponential_backoff": self.retry_exponential_backoff,
        }
        if self.max_retry_delay is not None:
            kwargs["max_retry_delay"] = self.max_retry_delay
        if self.pool is not None:
            kwargs["pool"] = self.pool
        return kwargs


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a database session may wait, in seconds, so a partition or a lock queue fails the
    task with a clear error instead of holding it until its ``execution_timeout``.

    Postgres: ``connect_timeout``, TCP keepalives (``keepalives_idle`` then ``keepalives_count``
    probes ``keepalives_interval`` apart), ``statement_timeout`` and ``lock_timeout``. Snowflake's
    connector: ``login_timeout`` (= ``connect_timeout``) and ``network_timeout``
    (= ``statement_timeout``). Both: ``unreachable_after``, how long a running dbt command may find
    the warehouse failing every probe before it is stopped (:mod:`include.orchestration.watchdog`;
    dbt-snowflake passes its connector no network timeout, and a paused server enforces none).
    """

    connect_timeout: int = 10
    keepalives_idle: int = 30
    keepalives_interval: int = 10
    keepalives_count: int = 3
    statement_timeout: int = 1800
    lock_timeout: int = 60
    unreachable_after: int = 180

    def within(self, seconds: int) -> ConnectionLimits:
        """These limits with every wait of a session capped at ``seconds`` (a watchdog's probe)."""
        return replace(
            self,
            connect_timeout=min(self.connect_timeout, seconds),
            statement_timeout=min(self.statement_timeout, seconds),
            lock_timeout=min(self.lock_timeout, seconds),
        )

    def overridden(self, extras: dict[str, Any]) -> ConnectionLimits:
        """These limits with any of the same keys a Connection's extras set (the extras win)."""
        names = {f.name for f in fields(ConnectionLimits)}
        return replace(self, **{key: int(value) for key, value in extras.items() if key in names})


@dataclass(frozen=True)
class Pool:
    """An Airflow pool the project's tasks use. Pools live in the metadata database, which task
    and parse code cannot read on Airflow 3, so the project declares them here, in the image: a
    ``pool`` that names none of them fails the DAG import. ``airflow_settings.yaml`` (the local
    stack, ``astro dev start``) and the deployment must create the same pools."""

    slots: int
    description: str = ""


@dataclass(frozen=True)
class Policies:
    tasks: dict[str, TaskPolicy]
    run_deadline: timedelta
    connections: dict[str, ConnectionLimits] = field(default_factory=dict)  # conn id → limits; "default"
    pools: dict[str, Pool] = field(default_factory=dict)  # name → pool; default_pool is Airflow's own


def task_policy(task_type: str) -> TaskPolicy:
    policies = load_policies()
    try:
        return policies.tasks[task_type]
    except KeyError:
        known = ", ".join(sorted(policies.tasks))
        raise PolicyError(f"no policy for task type '{task_type}' in {POLICIES_FILE} (known: {known})") from None


def run_deadline() -> timedelta:
    return load_policies().run_deadline


DEFAULT_POOL = "default_pool"  # Airflow's own, always present


def declared_pools() -> frozenset[str]:
    """The pool names a task may use: Airflow's ``default_pool`` and ``pools:`` of policies.yml."""
    return frozenset({DEFAULT_POOL, *load_policies().pools})


def pool_problem(pool: str | None) -> str | None:
    """Why ``pool`` cannot run a task (a pool that exists nowhere leaves it queued forever), or None."""
    if pool is None or pool in declared_pools():
        return None
    return (
        f"`pool` {pool!r} is not a pool of {POLICIES_FILE.name} ({', '.join(sorted(declared_pools()))}), so its "
        f"task would wait forever: fix `pool`, or declare the pool under `pools:` in {POLICIES_FILE} (and create "
        f"it in airflow_settings.yaml and on the deployment)."
    )


def connection_limits(conn_id: str, extras: dict[str, Any] | None = None) -> ConnectionLimits:
    """The limits for one Connection: its policies.yml entry, else ``default``, then its extras."""
    limits = load_policies().connections
    return limits.get(conn_id, limits.get("default", ConnectionLimits())).overridden(extras or {})


def airflow_connection_limits(conn_id: str) -> ConnectionLimits:
    """:func:`connection_limits` with the Airflow Connection's extras; the policies.yml limits alone
    when the Connection cannot be read (they then name what applies)."""
    from airflow.sdk import BaseHook

    try:
        extras = BaseHook.get_connection(conn_id).extra_dejson
    except Exception:
        extras = {}
    return connection_limits(conn_id, extras)


@cache
def load_policies(path: Path = POLICIES_FILE) -> Policies:
    document = yaml.safe_load(path.read_text()) or {}
    tasks = {name: _task_policy(path, name, spec) for name, spec in (document.get("tasks") or {}).items()}
    deadline = (document.get("deadline") or {}).get("run_finishes_within")
    if not isinstance(deadline, (int, float)) or deadline <= 0:
        raise PolicyError(f"{path}: deadline.run_finishes_within must be a positive number of minutes")
    pools = _pools(path, document)
    for name, policy in tasks.items():
        if policy.pool is not None and policy.pool not in {DEFAULT_POOL, *pools}:
            raise PolicyError(
                f"{path}: tasks.{name}.pool {policy.pool!r} is not declared under `pools:` "
                f"({', '.join(sorted(pools)) or 'none'}): declare it there or fix the name."
            )
    return Policies(
        tasks=tasks,
        run_deadline=timedelta(minutes=deadline),
        connections=_connections(path, document),
        pools=pools,
    )


def _pools(path: Path, document: dict[str, Any]) -> dict[str, Pool]:
    """``pools:``: name → ``{slots, description}``."""
    pools: dict[str, Pool] = {}
    for name, spec in (document.get("pools") or {}).items():
        if not isinstance(spec, dict) or spec.keys() - {"slots", "description"}:
            raise PolicyError(f"{path}: pools.{name} must be a mapping of `slots` and `description`")
        slots = spec.get("slots")
        if not isinstance(slots, int) or isinstance(slots, bool) or slots <= 0:
            raise PolicyError(f"{path}: pools.{name}.slots must be a positive whole number, got {slots!r}")
        pools[name] = Pool(slots=slots, description=str(spec.get("description") or ""))
    return pools


def _connections(path: Path, document: dict[str, Any]) -> dict[str, ConnectionLimits]:
    """``connections:``: a ``default`` entry and per-Connection entries, each over the default."""
    raw = document.get("connections") or {}
    allowed = {f.name for f in fields(ConnectionLimits)}
    default = ConnectionLimits()
    limits: dict[str, ConnectionLimits] = {}
    for conn_id in sorted(raw, key=lambda name: name != "default"):  # default first: the others build on it
        spec = raw[conn_id] or {}
        unknown = spec.keys() - allowed if isinstance(spec, dict) else {"<not a mapping>"}
        if unknown:
            raise PolicyError(
                f"{path}: connections.{conn_id} has unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})"
            )
        for key, value in spec.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise PolicyError(f"{path}: connections.{conn_id}.{key} must be a positive whole number of seconds")
        limits[conn_id] = (default if conn_id == "default" else limits.get("default", default)).overridden(spec)
    return limits


def _task_policy(path: Path, name: str, spec: Any) -> TaskPolicy:
    allowed = {field.name for field in fields(TaskPolicy)}
    if not isinstance(spec, dict) or not {"retries", "retry_delay", "execution_timeout"} <= spec.keys():
        raise PolicyError(f"{path}: tasks.{name} needs retries, retry_delay and execution_timeout")
    unknown = spec.keys() - allowed
    if unknown:
        raise PolicyError(f"{path}: tasks.{name} has unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    if not isinstance(spec["retries"], int) or spec["retries"] < 0:
        raise PolicyError(f"{path}: tasks.{name}.retries must be a non-negative integer")
    minutes = {
        key: _minutes(path, name, key, spec[key])
        for key in ("retry_delay", "execution_timeout", "max_retry_delay")
        if key in spec
    }
    return TaskPolicy(
        retries=spec["retries"],
        retry_delay=minutes["retry_delay"],
        execution_timeout=minutes["execution_timeout"],
        retry_exponential_backoff=bool(spec.get("retry_exponential_backoff", False)),
        max_retry_delay=minutes.get("max_retry_delay"),
        pool=_pool(path, name, spec.get("pool")),
    )


def _pool(path: Path, name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise PolicyError(f"{path}: tasks.{name}.pool must be the name of an Airflow pool, got {value!r}")
    return value


def _minutes(path: Path, name: str, key: str, value: Any) -> timedelta:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise PolicyError(f"{path}: tasks.{name}.{key} must be a positive number of minutes, got {value!r}")
    return timedelta(minutes=value)
