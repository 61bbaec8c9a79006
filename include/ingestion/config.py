"""Typed, validated view of ``sources.yml``: what the pipeline extracts.

The DAG builds one extraction task per entry at parse time, so a bad entry must fail there with a
message a newcomer can act on: every error names the file, the entry and the fix. The entries are
frozen dataclasses so nothing downstream can drift from what was validated.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import yaml

from include.orchestration.policies import pool_problem

SOURCES_FILE = Path(__file__).with_name("sources.yml")
MAX_CONCURRENT_REQUESTS = 8  # a requests session pools 10 connections per host
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")  # whole names only: fullmatch, since `$` lets a trailing "\n" through
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: parsed on every task run


class ConfigError(ValueError):
    """``sources.yml`` is malformed; the message names the file, the entry and the fix."""


class LoadMode(str, Enum):
    INCREMENTAL = "incremental"
    FULL = "full"


@dataclass(frozen=True)
class SourceEntry:
    """Keys every entry has. ``name`` is also the raw table and the task's name."""

    name: str
    kind: ClassVar[str]
    primary_key: tuple[str, ...]
    mode: LoadMode

    @property
    def raw_table(self) -> str:
        return self.name


@dataclass(frozen=True)
class PostgresTable(SourceEntry):
    """A table of the shop's OLTP database, read incrementally on a timestamp cursor."""

    kind: ClassVar[str] = "postgres"
    conn_id: str
    table: str
    cursor: str
    schema: str = "public"
    overlap_seconds: int = 900
    pool: str | None = None


@dataclass(frozen=True)
class StripeCharges(SourceEntry):
    """Stripe's ``/v1/charges``; re-read ``reread_days`` behind the newest ``created`` seen.

    ``concurrent_requests``: list requests in flight at once (1 to 8); a listing longer than a page
    is split into windows of ``created`` listed side by side. Stripe allows 100 read requests a
    second in live mode and 25 in test mode, and a rate-limited request is retried after waiting.
    """

    kind: ClassVar[str] = "stripe"
    conn_id: str
    resource: str = "charges"
    cursor: str = "created"
    reread_days: int = 30
    concurrent_requests: int = 4


@dataclass(frozen=True)
class MarketingCsv(SourceEntry):
    """Marketing spend files in a landing location (an Airflow object-storage URL)."""

    kind: ClassVar[str] = "marketing_csv"
    landing_url_variable: str
    file_pattern: str = "marketing_spend_*.csv"
    conn_id: str | None = None


SourceConfig = PostgresTable | StripeCharges | MarketingCsv
_KINDS: dict[str, type[SourceEntry]] = {cls.kind: cls for cls in (PostgresTable, StripeCharges, MarketingCsv)}


def load_source_config(path: Path = SOURCES_FILE) -> tuple[SourceConfig, ...]:
    """Every entry of ``sources.yml``, validated; raises :class:`ConfigError` on the first problem.

    Parsed once per content of the file: a task process has parsed its DAG file, which read it,
    before the task asks for its entry.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sources file ({exc.strerror}).") from exc
    return _parse(path, text)


@functools.lru_cache(maxsize=8)
def _parse(path: Path, text: str) -> tuple[SourceConfig, ...]:
    try:
        document = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}). Fix the syntax at the position shown.") from exc
    if not isinstance(document, dict) or not isinstance(document.get("sources"), list):
        raise ConfigError(f"{path}: expected a top-level `sources:` list of entries.")
    entries = tuple(_entry(path, index, raw) for index, raw in enumerate(document["sources"], start=1))
    _check_unique_names(path, entries)
    return entries  # type: ignore[return-value]


def source_entry(name: str, path: Path = SOURCES_FILE) -> SourceConfig:
    """The entry called ``name``; the error lists the names that exist."""
    entries = load_source_config(path)
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in entries)
    raise ConfigError(f"{path}: no source named '{name}'. Known sources: {known}.")


def _entry(path: Path, index: int, raw: Any) -> SourceEntry:
    where = f"{path}: entry #{index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys (name, kind, ...), got {type(raw).__name__}.")
    if isinstance(raw.get("name"), str):
        where = f"{path}: source '{raw['name']}' (entry #{index})"
    kind = raw.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {sorted(_KINDS)}. Set `kind:` to one of them.")
    cls = _KINDS[kind]
    _check_keys(where, cls, raw)
    values = {key: _value(where, cls, key, value) for key, value in raw.items() if key != "kind"}
    entry = cls(**values)
    _check_entry(where, entry)
    return entry


def _check_keys(where: str, cls: type[SourceEntry], raw: dict[str, Any]) -> None:
    allowed = {f.name for f in fields(cls)} | {"kind"}
    for key in raw:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            fix = f"did you mean `{hint[0]}`?" if hint else f"allowed keys: {', '.join(sorted(allowed))}."
            raise ConfigError(f"{where}: unknown key `{key}` for kind {cls.kind}; {fix}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    for key in required:
        if raw.get(key) in (None, "", []):
            raise ConfigError(f"{where}: `{key}` is required for kind {cls.kind}. Add `{key}: ...` to the entry.")


def _value(where: str, cls: type[SourceEntry], key: str, value: Any) -> Any:
    if key == "mode":
        try:
            return LoadMode(value)
        except ValueError:
            raise ConfigError(f"{where}: mode {value!r} is not one of incremental, full.") from None
    if key == "primary_key":
        columns = [value] if isinstance(value, str) else value
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            raise ConfigError(f"{where}: `primary_key` must be a column name or a list of them, e.g. [order_id].")
        return tuple(columns)
    if key in ("overlap_seconds", "reread_days"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: `{key}` must be a whole number >= 0, got {value!r}.")
        return value
    if key == "concurrent_requests":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CONCURRENT_REQUESTS:
            raise ConfigError(
                f"{where}: `concurrent_requests` must be a whole number from 1 to {MAX_CONCURRENT_REQUESTS} "
                f"(requests in flight at once), got {value!r}."
            )
        return value
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: `{key}` must be a string, got {value!r}.")
    return value


def _check_entry(where: str, entry: SourceEntry) -> None:
    identifiers = [("name", entry.name), *(("primary_key", column) for column in entry.primary_key)]
    if isinstance(entry, PostgresTable):
        identifiers += [("table", entry.table), ("schema", entry.schema), ("cursor", entry.cursor)]
    for key, value in identifiers:
        if not _IDENTIFIER.fullmatch(value):
            raise ConfigError(
                f"{where}: `{key}` {value!r} is not a lower_snake_case identifier "
                f"(letters, digits, underscores; not starting with a digit)."
            )
    if entry.name.startswith("_"):
        raise ConfigError(f"{where}: names starting with `_` are reserved for raw's bookkeeping tables; rename it.")
    problem = pool_problem(entry.pool) if isinstance(entry, PostgresTable) else None
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if isinstance(entry, StripeCharges) and (entry.resource, entry.cursor) != ("charges", "created"):
        raise ConfigError(f"{where}: only `resource: charges` with `cursor: created` is supported.")


def _check_unique_names(path: Path, entries: tuple[SourceEntry, ...]) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        if entry.name in seen:
            raise ConfigError(
                f"{path}: source '{entry.name}' (entry #{index}) repeats a name used above; "
                f"names are raw tables and task ids, so give each entry its own."
            )
        seen.add(entry.name)
