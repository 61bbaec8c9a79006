"""Marketing spend files as the ad platforms deliver them: one CSV per day, some bad lines.

A few files carry a bad line (wrong type, negative number, unknown channel, missing field) that
the loader must set aside with its reason. :func:`redeliver` rewrites a delivered file with
corrected numbers: the same name with new content, which the loader must load again and let
replace the earlier rows.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date
from pathlib import Path

from dev.shopgen.rows import money
from dev.shopgen.scales import CHANNELS

HEADER = ("date", "channel", "campaign_id", "campaign_name", "spend", "impressions", "clicks")
PAID_CHANNELS = tuple(channel for channel in CHANNELS if channel != "organic")
BAD_LINES = (
    ("{day}", "social", "so-bad", "Typo in spend", "12,50", "100", "3"),  # wrong type
    ("{day}", "email", "em-bad", "Negative clicks", "10.00", "100", "-4"),  # negative number
    ("{day}", "tv", "tv-001", "Unknown channel", "99.00", "1000", "10"),  # unknown channel
    ("{day}", "affiliate", "", "Missing campaign id", "5.00", "50", "1"),  # missing field
    ("not-a-date", "paid_search", "ps-bad", "Bad date", "1.00", "10", "1"),  # wrong type
)


def file_name(day: date) -> str:
    return f"marketing_spend_{day.isoformat()}.csv"


def day_rows(rng: random.Random, day: date, campaigns_per_channel: int) -> list[tuple[str, ...]]:
    """The valid rows of one day: every paid campaign, plus organic at zero spend."""
    rows = [(day.isoformat(), "organic", "org-000", "Organic (no spend)", "0.00", "0", "0")]
    for channel in PAID_CHANNELS:
        for number in range(1, campaigns_per_channel + 1):
            spend = rng.randint(0, 250_000) if rng.random() > 0.02 else 0
            impressions = spend // 2 + rng.randint(0, 5_000)
            clicks = impressions // rng.randint(20, 80)
            campaign_id = f"{channel[:2]}-{number:03d}"
            rows.append(
                (
                    day.isoformat(),
                    channel,
                    campaign_id,
                    f"{channel.replace('_', ' ').title()} {number}",
                    money(spend),
                    str(impressions),
                    str(clicks),
                )
            )
    return rows


def write_day(
    landing_dir: Path, rng: random.Random, day: date, campaigns_per_channel: int, bad_line: int | None
) -> Path:
    rows = day_rows(rng, day, campaigns_per_channel)
    if bad_line is not None:
        bad = BAD_LINES[bad_line % len(BAD_LINES)]
        rows.insert(rng.randint(1, len(rows)), tuple(value.format(day=day.isoformat()) for value in bad))
    return _write(landing_dir / file_name(day), rows)


def latest_file(landing_dir: Path) -> Path | None:
    files = sorted(landing_dir.glob(file_name(date.min).replace("0001-01-01", "*")))
    return files[-1] if files else None


def campaigns_per_channel(path: Path) -> int:
    return max(1, sum(1 for row in _rows(path) if len(row) > 1 and row[1] == "paid_search"))


def redeliver(rng: random.Random, path: Path) -> Path:
    """Rewrite a delivered file with corrected spend on its paid rows (the platform's late fix)."""
    rows = _rows(path)
    corrected = []
    for row in rows:
        if len(row) == len(HEADER) and row[1] in PAID_CHANNELS and row[4].replace(".", "", 1).isdigit():
            row = [*row[:4], money(round(float(row[4]) * 100) + rng.randint(1, 5_000)), *row[5:]]
        corrected.append(tuple(row))
    return _write(path, corrected)


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as source:
        return list(csv.reader(source))[1:]


def _write(path: Path, rows: list[tuple[str, ...]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".csv.part")
    temporary.write_text(buffer.getvalue(), encoding="utf-8")
    temporary.replace(path)  # a reader never sees half a file
    return path
