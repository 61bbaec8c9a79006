"""Reads ``airflow_settings.yaml`` (the Astro CLI's format) and adapts it to the local stack.

The file is the single source of truth for Connections, Variables and Pools: ``astro dev start``
imports it as it is (hosts are docker-compose services), and the embedded stack imports the same
entries after :func:`localize` has pointed those service hosts at local processes. Nothing else
about a connection changes, so the two environments cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml


class SettingsError(ValueError):
    """airflow_settings.yaml is missing something or malformed."""


@dataclass(frozen=True)
class ConnectionSpec:
    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_airflow_dict(self) -> dict[str, Any]:
        """The shape of ``airflow connections import`` / ``AIRFLOW_CONN_*`` JSON."""
        body: dict[str, Any] = {"conn_type": self.conn_type}
        for key in ("host", "port", "schema", "login", "password"):
            value = getattr(self, key)
            if value not in (None, ""):
                body[key] = value
        if self.extra:
            body["extra"] = json.dumps(self.extra)
        return body

    def to_env_value(self) -> str:
        """JSON for an ``AIRFLOW_CONN_<ID>`` environment variable (tests, subprocesses)."""
        return json.dumps(self.to_airflow_dict())


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str = ""


@dataclass(frozen=True)
class AirflowSettings:
    connections: tuple[ConnectionSpec, ...]
    variables: dict[str, str]
    pools: tuple[PoolSpec, ...]

    def connection(self, conn_id: str) -> ConnectionSpec:
        for conn in self.connections:
            if conn.conn_id == conn_id:
                return conn
        raise SettingsError(f"airflow_settings.yaml has no connection '{conn_id}'; add it under airflow.connections")


@dataclass(frozen=True)
class Endpoint:
    """Where a docker-compose service is reachable on the local stack."""

    host: str
    port: int


def load_settings(path: Path) -> AirflowSettings:
    """Parse the Astro CLI settings file; errors name the file and the entry."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from exc
    section = document.get("airflow") or {}
    connections = tuple(_connection(path, raw) for raw in section.get("connections") or [])
    variables = {str(item["variable_name"]): str(item["variable_value"]) for item in section.get("variables") or []}
    pools = tuple(
        PoolSpec(str(item["pool_name"]), int(item["pool_slot"]), str(item.get("pool_description") or ""))
        for item in section.get("pools") or []
    )
    return AirflowSettings(connections, variables, pools)


def _connection(path: Path, raw: dict[str, Any]) -> ConnectionSpec:
    if not raw.get("conn_id") or not raw.get("conn_type"):
        raise SettingsError(f"{path}: every connection needs conn_id and conn_type, got {sorted(raw)}")
    port = raw.get("conn_port")
    return ConnectionSpec(
        conn_id=str(raw["conn_id"]),
        conn_type=str(raw["conn_type"]),
        host=raw.get("conn_host") or None,
        port=int(port) if port not in (None, "") else None,
        schema=raw.get("conn_schema") or None,
        login=raw.get("conn_login") or None,
        password=raw.get("conn_password") or None,
        extra=dict(raw.get("conn_extra") or {}),
    )


def localize(settings: AirflowSettings, services: dict[str, Endpoint], paths: dict[str, Path]) -> AirflowSettings:
    """Point compose service hosts at local endpoints and container paths at local folders.

    ``services`` maps a compose service name (``source-db``) to its local endpoint; ``paths`` maps
    a container path prefix (``/usr/local/airflow/landing``) to a local folder. A host may be a bare
    name or a URL (``http://stripe-stub:12111``); extras ``host``/``port`` are rewritten alike.
    """
    connections = tuple(_localize_connection(conn, services) for conn in settings.connections)
    variables = {name: _localize_path_url(value, paths) for name, value in settings.variables.items()}
    return replace(settings, connections=connections, variables=variables)


def _localize_connection(conn: ConnectionSpec, services: dict[str, Endpoint]) -> ConnectionSpec:
    host, port = _localize_host(conn.host, conn.port, services)
    extra = dict(conn.extra)
    if extra.get("host") in services:
        endpoint = services[extra["host"]]
        extra["host"], extra["port"] = endpoint.host, endpoint.port
    return replace(conn, host=host, port=port, extra=extra)


def _localize_host(host: str | None, port: int | None, services: dict[str, Endpoint]) -> tuple[str | None, int | None]:
    if not host:
        return host, port
    if "://" in host:
        parts = urlsplit(host)
        endpoint = services.get(parts.hostname or "")
        if endpoint is None:
            return host, port
        netloc = f"{endpoint.host}:{endpoint.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), port
    endpoint = services.get(host)
    return (endpoint.host, endpoint.port) if endpoint else (host, port)


def _localize_path_url(value: str, paths: dict[str, Path]) -> str:
    for container_prefix, local_dir in paths.items():
        for scheme in ("file://", ""):
            if value.startswith(scheme + container_prefix):
                rest = value[len(scheme + container_prefix) :]
                return scheme + str(local_dir) + rest
    return value
