"""Marketing CSV files → raw, through ObjectStoragePath (file://) and the embedded PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from include.ingestion.pipeline import extract
from include.ingestion.sources.marketing_csv import UnreadableFile

HEADER = "date,channel,campaign_id,campaign_name,spend,impressions,clicks\n"
DAY1 = HEADER + (
    "2025-03-01,email,e1,Newsletter,10.00,1000,50\n"
    "2025-03-01,paid_search,ps1,Brand,120.50,20000,900\n"
    "2025-03-01,tv,tv1,Prime time,999.00,1,1\n"  # unknown channel
    "2025-03-01,social,s1,Stories,-4.00,10,1\n"  # negative spend
)
DAY2 = HEADER + "2025-03-02,email,e1,Newsletter,11.00,1100,55\n2025-03-02,affiliate,a1,Partners,abc,5,1\n"


@pytest.fixture
def warehouse_dsn(warehouse_postgres: Callable[[str, str], str]) -> str:
    return warehouse_postgres("ing_mkt", "wh-Pa55word-8e2b7a")


@pytest.fixture
def landing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "landing" / "marketing"
    folder.mkdir(parents=True)
    monkeypatch.setenv("AIRFLOW_VAR_MARKETING_LANDING_URL", f"file://{folder}")
    return folder


def rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def spend(dsn: str) -> list[tuple]:
    return rows(
        dsn,
        "SELECT date::text, channel, campaign_id, spend::text, impressions, clicks, _source_file, "
        "_source_line FROM raw.marketing_spend ORDER BY 1, 2, 3",
    )


def rejects(dsn: str) -> list[tuple]:
    return rows(
        dsn, "SELECT _source_file, _source_line, raw_line, reason FROM raw.marketing_spend_rejects ORDER BY 1, 2"
    )


def test_bad_rows_are_quarantined_with_reasons_and_good_rows_load(landing: Path, warehouse_dsn: str) -> None:
    (landing / "marketing_spend_2025-03-01.csv").write_text(DAY1)
    (landing / "marketing_spend_2025-03-02.csv").write_text(DAY2)
    (landing / "unrelated.txt").write_text("not a spend file")

    report = extract("marketing_spend", batch_id="m1")

    assert (report.rows_read, report.rows_merged, report.rows_rejected) == (6, 3, 3)
    assert report.files == ("marketing_spend_2025-03-01.csv", "marketing_spend_2025-03-02.csv")
    assert spend(warehouse_dsn) == [
        ("2025-03-01", "email", "e1", "10.00", 1000, 50, "marketing_spend_2025-03-01.csv", 2),
        ("2025-03-01", "paid_search", "ps1", "120.50", 20000, 900, "marketing_spend_2025-03-01.csv", 3),
        ("2025-03-02", "email", "e1", "11.00", 1100, 55, "marketing_spend_2025-03-02.csv", 2),
    ]
    assert rejects(warehouse_dsn) == [
        (
            "marketing_spend_2025-03-01.csv",
            4,
            "2025-03-01,tv,tv1,Prime time,999.00,1,1",
            "unknown channel 'tv' (expected one of organic, paid_search, social, email, affiliate)",
        ),
        (
            "marketing_spend_2025-03-01.csv",
            5,
            "2025-03-01,social,s1,Stories,-4.00,10,1",
            "spend must be >= 0, got -4.00",
        ),
        (
            "marketing_spend_2025-03-02.csv",
            3,
            "2025-03-02,affiliate,a1,Partners,abc,5,1",
            "spend 'abc' is not a decimal number",
        ),
    ]


def test_each_file_is_loaded_once_and_a_changed_redelivery_replaces_its_rows(landing: Path, warehouse_dsn: str) -> None:
    day1 = landing / "marketing_spend_2025-03-01.csv"
    day1.write_text(DAY1)
    extract("marketing_spend", batch_id="m1")
    loaded = rows(warehouse_dsn, "SELECT * FROM raw.marketing_spend ORDER BY 1, 2, 3")

    again = extract("marketing_spend", batch_id="m2")
    assert (again.rows_read, again.rows_merged, again.files) == (0, 0, ())
    assert rows(warehouse_dsn, "SELECT * FROM raw.marketing_spend ORDER BY 1, 2, 3") == loaded

    # Corrected delivery: e1's spend fixed, the tv row fixed to a known channel, the social row still bad.
    day1.write_text(DAY1.replace("10.00,1000,50", "12.00,1000,50").replace(",tv,tv1,", ",affiliate,tv1,"))
    redelivered = extract("marketing_spend", batch_id="m3")

    assert (redelivered.rows_merged, redelivered.rows_rejected) == (2, 1)
    assert rows(warehouse_dsn, "SELECT campaign_id, spend::text, _batch_id FROM raw.marketing_spend ORDER BY 1") == [
        ("e1", "12.00", "m3"),
        ("ps1", "120.50", "m1"),
        ("tv1", "999.00", "m3"),
    ]
    assert [(r[1], r[3]) for r in rejects(warehouse_dsn)] == [(5, "spend must be >= 0, got -4.00")]
    landed = rows(warehouse_dsn, "SELECT file_name, rows_loaded, rows_rejected, _batch_id FROM raw._landed_files")
    assert landed == [("marketing_spend_2025-03-01.csv", 3, 1, "m3")]


def test_an_unreadable_file_fails_the_task_naming_it_and_loads_nothing(landing: Path, warehouse_dsn: str) -> None:
    (landing / "marketing_spend_2025-03-01.csv").write_text(DAY1)
    (landing / "marketing_spend_2025-03-02.csv").write_text("date;channel;spend\n2025-03-02;email;3\n")

    with pytest.raises(UnreadableFile, match=r"marketing_spend_2025-03-02\.csv: header is 'date;channel;spend'"):
        extract("marketing_spend", batch_id="m1")

    assert rows(warehouse_dsn, "SELECT count(*) FROM raw.marketing_spend") == [(0,)]
    assert rows(warehouse_dsn, "SELECT count(*) FROM raw._landed_files") == [(0,)]


DUPLICATED = HEADER + (
    "2025-03-03,email,e1,Newsletter,10.00,1000,50\n"  # line 2: same key as line 4, set aside
    "2025-03-03,social,s1,Stories,5.00,500,5\n"
    "2025-03-03,email,e1,Newsletter,12.00,1200,60\n"  # line 4: the last line of the key loads
)


def test_a_key_repeated_in_one_file_loads_its_last_line_and_rejects_the_earlier(
    landing: Path, warehouse_dsn: str
) -> None:
    (landing / "marketing_spend_2025-03-03.csv").write_text(DUPLICATED)

    report = extract("marketing_spend", batch_id="d1")

    assert (report.rows_read, report.rows_loaded, report.rows_rejected, report.rows_merged) == (3, 2, 1, 2)
    assert [(r[1], r[2], r[3], r[4], r[7]) for r in spend(warehouse_dsn)] == [
        ("email", "e1", "12.00", 1200, 4),
        ("social", "s1", "5.00", 500, 3),
    ]
    reason = "duplicate key (date, channel, campaign_id): line 4 of this file has the same key and is loaded instead"
    line = "2025-03-03,email,e1,Newsletter,10.00,1000,50"
    assert rejects(warehouse_dsn) == [("marketing_spend_2025-03-03.csv", 2, line, reason)]
    landed = rows(warehouse_dsn, "SELECT rows_loaded, rows_rejected FROM raw._landed_files")
    assert landed == [(2, 1)]


def test_a_redelivery_in_the_same_run_wins_and_every_line_is_accounted_for(landing: Path, warehouse_dsn: str) -> None:
    """Two files with the same key in one run: the later file's row is in raw (the contract's later
    delivery), both files' valid lines count as loaded, as they would over two runs."""
    (landing / "marketing_spend_2025-03-03.csv").write_text(DUPLICATED)
    (landing / "marketing_spend_2025-03-04.csv").write_text(HEADER + "2025-03-03,social,s1,Stories,7.00,700,7\n")

    report = extract("marketing_spend", batch_id="d1")

    assert report.rows_read == report.rows_loaded + report.rows_rejected == 4
    assert (report.rows_loaded, report.rows_rejected, report.rows_merged) == (3, 1, 2)
    by_key = {(r[1], r[2]): (r[3], r[6]) for r in spend(warehouse_dsn)}
    assert by_key == {
        ("email", "e1"): ("12.00", "marketing_spend_2025-03-03.csv"),
        ("social", "s1"): ("7.00", "marketing_spend_2025-03-04.csv"),
    }
