"""Marketing spend files (``marketing_spend_<date>.csv``) from the landing location.

The location is an Airflow object-storage URL held in a Variable (``file://`` locally, ``s3://``
in production), read through ``ObjectStoragePath``. A file is loaded when its name is new or its
content changed (sha256 against ``raw._landed_files``). Each line is validated on its own: a bad
line goes to ``raw.marketing_spend_rejects`` with its reason and the good lines of the same file
still load. Two lines of one file with the same key: the later line loads (as a later delivery
would replace it) and the earlier one is set aside as a reject naming the line that won, so every
line read is either loaded or rejected. A file that cannot be read as this CSV at all (not UTF-8,
wrong header) fails the task with a message naming the file, because loading "nothing" from it would look like success.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatch
from typing import Any

from include.ingestion.config import MarketingCsv
from include.ingestion.tables import Column, RawTable

HEADER = ("date", "channel", "campaign_id", "campaign_name", "spend", "impressions", "clicks")
KEY = ("date", "channel", "campaign_id")  # the contract's row key; a later delivery replaces it
CHANNELS = ("organic", "paid_search", "social", "email", "affiliate")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WHOLE = re.compile(r"^[+-]?\d+$")
_BIGINT_MAX = 2**63 - 1
_SPEND_MAX = Decimal("1e12")  # numeric(14,2)

LANDED_FILES = RawTable(
    "_landed_files",
    (
        Column("file_name", "text"),
        Column("checksum", "text"),
        Column("rows_loaded", "bigint"),
        Column("rows_rejected", "bigint"),
    ),
    key=("file_name",),
)


class UnreadableFile(ValueError):
    """A landed file is not the expected CSV; the message names the file and the problem."""


class RowError(ValueError):
    """One line is not a valid spend row; the message is the reason stored with the reject."""


@dataclass(frozen=True)
class Delivery:
    """One landed file's content, split into valid rows and rejects."""

    name: str
    checksum: str
    rows: tuple[tuple[Any, ...], ...]
    rejects: tuple[tuple[Any, ...], ...]


def spend_table(entry: MarketingCsv) -> RawTable:
    columns = (
        Column("date", "date"),
        Column("channel", "text"),
        Column("campaign_id", "text"),
        Column("campaign_name", "text"),
        Column("spend", "numeric(14,2)"),
        Column("impressions", "bigint"),
        Column("clicks", "bigint"),
        Column("_source_file", "text"),
        Column("_source_line", "integer"),
    )
    return RawTable(entry.raw_table, columns, entry.primary_key)


def rejects_table(entry: MarketingCsv) -> RawTable:
    columns = (
        Column("_source_file", "text"),
        Column("_source_line", "integer"),
        Column("raw_line", "text"),
        Column("reason", "text"),
    )
    return RawTable(f"{entry.raw_table}_rejects", columns, ("_source_file", "_source_line"))


def pending_deliveries(entry: MarketingCsv, landed: dict[str, str], everything: bool) -> Iterator[Delivery]:
    """Files (in name order) that are new or changed since ``landed`` (name → checksum), parsed."""
    from airflow.sdk import ObjectStoragePath, Variable

    location = ObjectStoragePath(Variable.get(entry.landing_url_variable), conn_id=entry.conn_id)
    files = sorted((p for p in location.iterdir() if fnmatch(p.name, entry.file_pattern)), key=lambda p: p.name)
    key = spend_table(entry).key
    for path in files:
        data = path.read_bytes()
        checksum = hashlib.sha256(data).hexdigest()
        if everything or landed.get(path.name) != checksum:
            yield parse_file(path.name, data, checksum, key)


def latest_rows(deliveries: Iterable[Delivery], key_positions: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """Valid rows with one row per key: a later delivery (or later line) replaces an earlier one."""
    latest: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for delivery in deliveries:
        for row in delivery.rows:
            latest[tuple(row[i] for i in key_positions)] = row
    return list(latest.values())


def parse_file(name: str, data: bytes, checksum: str, key: tuple[str, ...] = KEY) -> Delivery:
    """Split a file into valid rows and rejects; :class:`UnreadableFile` when it is not this CSV.

    A key repeated inside the file keeps its last line and rejects the earlier ones (naming the
    line kept), so the count of lines read is always rows + rejects."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{name}: not UTF-8 text (byte {exc.start}); is it really a CSV file?") from None
    lines = text.splitlines()
    if not lines:
        raise UnreadableFile(f"{name}: the file is empty; expected the header {','.join(HEADER)!r}")
    try:
        header = tuple(field.strip() for field in _split(lines[0]))
    except RowError:
        header = ()
    if header != HEADER:
        raise UnreadableFile(f"{name}: header is {lines[0][:200]!r} but must be {','.join(HEADER)!r}")
    rows, rejects = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rows.append((*validate_row(_split(line)), name, number))
        except RowError as reason:
            rejects.append((name, number, line, str(reason)))
    rows, duplicates = _last_line_per_key(rows, key)
    rejects += [(name, number, lines[number - 1], reason) for number, reason in duplicates]
    return Delivery(name, checksum, tuple(rows), tuple(sorted(rejects, key=lambda reject: reject[1])))


def _last_line_per_key(
    rows: list[tuple[Any, ...]], key: tuple[str, ...]
) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    """Rows with one per key (the last line wins, like a later delivery would), and the (line,
    reason) of each earlier line of a repeated key: a repeat is set aside, never lost unseen."""
    positions = tuple(HEADER.index(column) for column in key if column in HEADER)
    last_line = {tuple(row[i] for i in positions): row[-1] for row in rows}
    kept, duplicates = [], []
    for row in rows:
        winner = last_line[tuple(row[i] for i in positions)]
        if winner == row[-1]:
            kept.append(row)
        else:
            reason = f"duplicate key ({', '.join(key)}): line {winner} of this file has the same key"
            reason += " and is loaded instead"
            duplicates.append((row[-1], reason))
    return kept, duplicates


def validate_row(fields: list[str]) -> tuple[Any, ...]:
    """A row's typed values in HEADER order, or :class:`RowError` listing every problem."""
    if len(fields) != len(HEADER):
        raise RowError(f"expected {len(HEADER)} fields, got {len(fields)}")
    values = dict(zip(HEADER, (field.strip() for field in fields), strict=True))
    problems = [f"{name} is missing" for name, value in values.items() if not value]
    typed: dict[str, Any] = {}
    checks = {"date": _date, "channel": _channel, "spend": _spend, "impressions": _count, "clicks": _count}
    for name, check in checks.items():
        if values[name]:
            try:
                typed[name] = check(name, values[name])
            except RowError as problem:
                problems.append(str(problem))
    if problems:
        raise RowError("; ".join(problems))
    return tuple(typed.get(name, values[name]) for name in HEADER)


def _split(line: str) -> list[str]:
    try:
        return next(csv.reader([line], strict=True), [])
    except csv.Error as exc:
        raise RowError(f"malformed CSV ({exc})") from None


def _date(name: str, value: str) -> date:
    try:
        if _ISO_DATE.match(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise RowError(f"{name} {value!r} is not an ISO date (YYYY-MM-DD)")


def _channel(name: str, value: str) -> str:
    if value not in CHANNELS:
        raise RowError(f"unknown {name} {value!r} (expected one of {', '.join(CHANNELS)})")
    return value


def _spend(name: str, value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise RowError(f"{name} {value!r} is not a decimal number") from None
    if not amount.is_finite():
        raise RowError(f"{name} {value!r} is not a decimal number")
    if amount < 0:
        raise RowError(f"{name} must be >= 0, got {value}")
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise RowError(f"{name} {value!r} has more than 2 decimal places")
    if amount >= _SPEND_MAX:
        raise RowError(f"{name} {value!r} is too large for numeric(14,2)")
    return amount


def _count(name: str, value: str) -> int:
    if not _WHOLE.match(value):
        raise RowError(f"{name} {value!r} is not a whole number")
    count = int(value)
    if count < 0:
        raise RowError(f"{name} must be >= 0, got {count}")
    if count > _BIGINT_MAX:
        raise RowError(f"{name} {value!r} is too large")
    return count
