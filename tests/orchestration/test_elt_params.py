"""The pipeline's run params are checked before anything is extracted, with errors that name the
bad value and the allowed ones; the success summary counts what the run did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from include.orchestration.alerts import AlertKind
from include.orchestration.elt import InvalidRunParams, run_choices, source_names, success_message


def test_empty_params_mean_every_source_and_the_variables_warehouse() -> None:
    choices = run_choices({})
    assert choices.sources == source_names() and choices.warehouse is None and choices.full_refresh is False


def test_a_subset_of_sources_and_a_warehouse() -> None:
    choices = run_choices({"sources": ["orders", "stripe_charges"], "warehouse": "snowflake", "full_refresh": True})
    assert choices.sources == ("orders", "stripe_charges") and choices.warehouse == "snowflake"
    assert choices.extracts("orders") and not choices.extracts("customers")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sources": ["ordres"]}, r"unknown source\(s\) ordres: choose from customers, products, orders"),
        ({"sources": "orders"}, "must be a list"),
        ({"warehouse": "bigquery"}, "'bigquery' is not a known warehouse: use one of postgres, snowflake"),
        ({"full_refresh": "yes"}, "must be true or false"),
    ],
)
def test_bad_params_are_refused_by_name(params: dict, message: str) -> None:
    with pytest.raises(InvalidRunParams, match=message):
        run_choices(params)


def test_success_summary_counts_rows_rejects_models_and_tests() -> None:
    loads = {
        "orders": {"rows_merged": 1200, "rows_rejected": 0},
        "marketing_spend": {"rows_merged": 40, "rows_rejected": 3},
        "customers": None,
    }
    states = {
        "transform.fct_orders.run": "success",
        "transform.fct_orders.test": "success",
        "transform.stg_orders.run": "success",
        "transform.stg_marketing_spend_rejects_run": "success",  # a model without tests
        "transform.raw_orders.source": "success",
        "transform.producer_state_absorbed": "success",
        "transform.dbt_producer_watcher": "success",
        "transform.assert_daily_revenue_matches_fct_orders_test": "success",
    }
    started = datetime.now(UTC) - timedelta(minutes=3)
    message = success_message("ecommerce_elt", "manual__1", started, loads, states, "postgres")
    assert message.kind is AlertKind.SUCCESS
    assert message.facts["Rows loaded"] == "orders 1,200, marketing_spend 40"
    assert message.facts["Rejected rows"] == "3" and message.facts["Skipped sources"] == "customers"
    assert (message.facts["Models built"], message.facts["Tests passed"]) == ("3", "2")
    assert message.facts["Duration"].startswith("3m")


def test_success_summary_names_future_dated_rows_only_when_there_are_some() -> None:
    loads = {"orders": {"rows_merged": 3, "future_rows": 2}, "customers": {"rows_merged": 1, "future_rows": 0}}
    facts = success_message("ecommerce_elt", "manual__1", None, loads, {}, "postgres").facts
    quiet = success_message("ecommerce_elt", "manual__1", None, {"customers": loads["customers"]}, {}, "postgres").facts
    assert facts["Future-dated rows"] == "orders 2"
    assert "Future-dated rows" not in quiet


def test_success_summary_accounts_every_row_read_as_loaded_or_rejected() -> None:
    loads = {
        "orders": {"rows_read": 1200, "rows_merged": 1200, "rows_rejected": 0},
        "marketing_spend": {"rows_read": 43, "rows_loaded": 40, "rows_merged": 12, "rows_rejected": 3},
    }
    message = success_message("ecommerce_elt", "manual__1", None, loads, {}, "postgres")
    assert message.facts["Rows read (loaded + rejected)"] == "orders 1,200 (1,200 + 0), marketing_spend 43 (40 + 3)"
