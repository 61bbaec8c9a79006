"""Marketing CSV row validation and file parsing: pure functions, no services."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from include.ingestion.sources.marketing_csv import (
    Delivery,
    RowError,
    UnreadableFile,
    latest_rows,
    parse_file,
    validate_row,
)

HEADER = "date,channel,campaign_id,campaign_name,spend,impressions,clicks"


def test_a_valid_row_is_typed() -> None:
    row = validate_row(["2025-03-01", "paid_search", "ps-001", "Spring, sale", "1234.50", "10000", "250"])
    assert row == (date(2025, 3, 1), "paid_search", "ps-001", "Spring, sale", Decimal("1234.50"), 10000, 250)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (["2025-02-30", "email", "e1", "n", "1", "1", "1"], "date '2025-02-30' is not an ISO date"),
        (["03/01/2025", "email", "e1", "n", "1", "1", "1"], "date '03/01/2025' is not an ISO date"),
        (["2025-03-01", "tv", "e1", "n", "1", "1", "1"], "unknown channel 'tv'"),
        (["2025-03-01", "email", "e1", "n", "-3.00", "1", "1"], "spend must be >= 0, got -3.00"),
        (["2025-03-01", "email", "e1", "n", "abc", "1", "1"], "spend 'abc' is not a decimal number"),
        (["2025-03-01", "email", "e1", "n", "NaN", "1", "1"], "spend 'NaN' is not a decimal number"),
        (["2025-03-01", "email", "e1", "n", "1.005", "1", "1"], "spend '1.005' has more than 2 decimal places"),
        (["2025-03-01", "email", "e1", "n", "1", "-1", "1"], "impressions must be >= 0, got -1"),
        (["2025-03-01", "email", "e1", "n", "1", "1", "2.5"], "clicks '2.5' is not a whole number"),
        (["2025-03-01", "email", "", "n", "1", "1", "1"], "campaign_id is missing"),
        (["2025-03-01", "email", "e1", "n", "1", "1"], "expected 7 fields, got 6"),
    ],
)
def test_bad_rows_are_rejected_with_a_reason(fields: list[str], reason: str) -> None:
    with pytest.raises(RowError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        validate_row(fields)


def test_every_problem_of_a_row_is_reported() -> None:
    with pytest.raises(RowError) as error:
        validate_row(["", "tv", "c", "n", "-1", "x", "1"])
    assert str(error.value) == (
        "date is missing; unknown channel 'tv' (expected one of organic, paid_search, social, email, affiliate); "
        "spend must be >= 0, got -1; impressions 'x' is not a whole number"
    )


def test_a_file_splits_into_rows_and_rejects_with_line_numbers() -> None:
    data = (
        f"{HEADER}\n2025-03-01,email,e1,Mail,10.00,100,5\n2025-03-01,radio,r1,Radio,1,1,1\n"
        '\n2025-03-01,social,s1,"So, cial",0,0,0\n'
    )
    delivery = parse_file("marketing_spend_2025-03-01.csv", data.encode(), "abc")
    assert [row[-1] for row in delivery.rows] == [2, 5]
    assert delivery.rows[1][3] == "So, cial"
    assert delivery.rejects == (
        (
            "marketing_spend_2025-03-01.csv",
            3,
            "2025-03-01,radio,r1,Radio,1,1,1",
            "unknown channel 'radio' (expected one of organic, paid_search, social, email, affiliate)",
        ),
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "the file is empty"),
        (b"date;channel;spend\n2025-03-01;email;1\n", "header is 'date;channel;spend' but must be"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"),
        (b'{"date": "2025-03-01"}\n', "header is"),
    ],
)
def test_an_unreadable_file_fails_naming_the_file_and_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(UnreadableFile, match=problem) as error:
        parse_file("marketing_spend_2025-03-02.csv", data, "x")
    assert str(error.value).startswith("marketing_spend_2025-03-02.csv: ")


def test_a_later_delivery_replaces_the_same_key() -> None:
    first = Delivery("a.csv", "1", ((date(2025, 3, 1), "email", "e1", "n", Decimal(1), 1, 1, "a.csv", 2),), ())
    second = Delivery("b.csv", "2", ((date(2025, 3, 1), "email", "e1", "n", Decimal(9), 9, 9, "b.csv", 7),), ())
    assert latest_rows([first, second], (0, 1, 2)) == [second.rows[0]]


def test_a_repeated_key_keeps_the_last_line_and_rejects_the_earlier_ones() -> None:
    header = "date,channel,campaign_id,campaign_name,spend,impressions,clicks\n"
    lines = [
        "2025-03-01,email,e1,A,1.00,1,1",
        "2025-03-01,email,e1,B,2.00,2,2",
        "2025-03-01,email,e2,C,3.00,3,3",
        "2025-03-01,email,e1,D,4.00,4,4",
    ]
    delivery = parse_file("marketing_spend_2025-03-01.csv", (header + "\n".join(lines) + "\n").encode(), "x")

    assert [(row[3], row[-1]) for row in delivery.rows] == [("C", 4), ("D", 5)]
    assert [(line, raw) for _, line, raw, _ in delivery.rejects] == [(2, lines[0]), (3, lines[1])]
    assert all("line 5 of this file has the same key" in reason for *_, reason in delivery.rejects)
    assert len(delivery.rows) + len(delivery.rejects) == len(lines)
