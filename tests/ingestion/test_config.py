"""sources.yml validation: the shipped file parses, and each kind of mistake names file, entry and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.ingestion.config import (
    ConfigError,
    LoadMode,
    MarketingCsv,
    PostgresTable,
    StripeCharges,
    load_source_config,
    source_entry,
)

VALID = """
sources:
  - name: orders
    kind: postgres
    conn_id: ecommerce_source
    table: orders
    primary_key: [order_id]
    cursor: updated_at
    mode: incremental
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yml"
    path.write_text(text)
    return path


def test_the_shipped_file_declares_every_contract_source() -> None:
    entries = {entry.name: entry for entry in load_source_config()}
    assert set(entries) == {"customers", "products", "orders", "order_items", "stripe_charges", "marketing_spend"}
    orders = entries["orders"]
    assert isinstance(orders, PostgresTable)
    assert (orders.table, orders.primary_key, orders.cursor, orders.mode) == (
        "orders",
        ("order_id",),
        "updated_at",
        LoadMode.INCREMENTAL,
    )
    assert orders.pool == "ecommerce_source_db"
    assert isinstance(entries["stripe_charges"], StripeCharges)
    assert entries["stripe_charges"].reread_days == 30
    assert isinstance(entries["marketing_spend"], MarketingCsv)
    assert entries["marketing_spend"].primary_key == ("date", "channel", "campaign_id")


def test_entries_are_frozen() -> None:
    entry = load_source_config()[0]
    with pytest.raises(AttributeError):
        entry.name = "other"  # type: ignore[misc]


def test_defaults_apply(tmp_path: Path) -> None:
    (entry,) = load_source_config(write(tmp_path, VALID))
    assert (entry.schema, entry.overlap_seconds, entry.pool) == ("public", 900, None)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("kind: postgres", "kind: mysql"), r"source 'orders' \(entry #1\): kind 'mysql' is not one of"),
        (("cursor: updated_at", "cursr: updated_at"), r"unknown key `cursr`.*did you mean `cursor`\?"),
        (("    cursor: updated_at\n", ""), r"`cursor` is required for kind postgres. Add `cursor: ...`"),
        (("mode: incremental", "mode: sometimes"), r"mode 'sometimes' is not one of incremental, full"),
        (("primary_key: [order_id]", "primary_key: []"), r"`primary_key` is required for kind postgres"),
        (("primary_key: [order_id]", "primary_key: {a: 1}"), r"`primary_key` must be a column name or a list"),
        (("table: orders", "table: Orders; DROP"), r"`table` 'Orders; DROP' is not a lower_snake_case identifier"),
        (("name: orders", "name: _orders"), r"reserved for raw's bookkeeping tables"),
        (
            ("mode: incremental", "mode: incremental\n    pool: ecommerce_source_pool"),
            r"`pool` 'ecommerce_source_pool' is not a pool of policies.yml \(.*ecommerce_source_db.*\).*wait forever",
        ),
    ],
)
def test_a_bad_entry_names_the_file_the_entry_and_the_fix(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(ConfigError, match=expected) as error:
        load_source_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("cursor: updated_at", 'cursor: "updated_at\\n"'), "cursor"),
        (("table: orders", 'table: "orders\\n"'), "table"),
        (("primary_key: [order_id]", 'primary_key: ["order_id\\n"]'), "primary_key"),
    ],
)
def test_an_identifier_with_a_trailing_newline_is_rejected(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    """``re.match`` with ``$`` accepts "name\\n"; the writers would then be handed a name that is not one."""
    path = write(tmp_path, VALID.replace(*change))
    expected = rf"source 'orders' \(entry #1\): `{key}` '\w+\\n' is not a lower_snake_case"
    with pytest.raises(ConfigError, match=expected):
        load_source_config(path)


def test_overlap_must_be_a_non_negative_whole_number(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "    overlap_seconds: -5\n")
    with pytest.raises(ConfigError, match=r"`overlap_seconds` must be a whole number >= 0, got -5"):
        load_source_config(path)


STRIPE = """
sources:
  - name: stripe_charges
    kind: stripe
    conn_id: stripe_api
    primary_key: [id]
    mode: incremental
"""


@pytest.mark.parametrize("value", ["0", "9", "'4'", "true", "2.5"])
def test_concurrent_requests_must_be_a_whole_number_from_one_to_eight(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, STRIPE + f"    concurrent_requests: {value}\n")
    with pytest.raises(
        ConfigError,
        match=r"source 'stripe_charges' \(entry #1\): `concurrent_requests` must be a whole number from 1 to 8",
    ):
        load_source_config(path)
    assert load_source_config(write(tmp_path, STRIPE))[0].concurrent_requests == 4


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + VALID.replace("sources:\n", ""))
    with pytest.raises(ConfigError, match=r"source 'orders' \(entry #2\) repeats a name"):
        load_source_config(path)


def test_broken_yaml_and_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_source_config(write(tmp_path, "sources: [\n"))
    with pytest.raises(ConfigError, match="expected a top-level `sources:` list"):
        load_source_config(write(tmp_path, "orders: {}\n"))
    with pytest.raises(ConfigError, match=r"entry #1: expected a mapping"):
        load_source_config(write(tmp_path, "sources:\n  - orders\n"))


def test_unknown_source_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no source named 'ordres'. Known sources: orders"):
        source_entry("ordres", write(tmp_path, VALID))


def test_the_file_is_parsed_once_per_content(tmp_path: Path) -> None:
    """A task process reads its entry after its DAG file read the whole file: the parse is reused,
    and an edit is seen at once."""
    path = write(tmp_path, VALID)
    first = load_source_config(path)
    assert load_source_config(path) is first
    path.write_text(VALID.replace("mode: incremental", "mode: full"))
    assert load_source_config(path)[0].mode is LoadMode.FULL
