"""Retry and timeout policies are data: the issue's numbers, and clear errors for bad files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from include.orchestration.policies import PolicyError, load_policies, run_deadline, task_policy


def test_policies_per_task_type_match_the_operating_rules() -> None:
    extraction = task_policy("extraction")
    assert (extraction.retries, extraction.retry_delay) == (2, timedelta(minutes=5))
    assert extraction.retry_exponential_backoff and extraction.max_retry_delay == timedelta(minutes=20)
    assert (task_policy("dbt_model").retries, task_policy("dbt_model").retry_delay) == (2, timedelta(minutes=5))
    assert (task_policy("dbt_test").retries, task_policy("dbt_test").retry_delay) == (1, timedelta(minutes=3))
    assert task_policy("notification").retries == 0
    assert run_deadline() == timedelta(minutes=30)


def test_every_policy_has_an_execution_timeout() -> None:
    for name, policy in load_policies().tasks.items():
        assert policy.operator_kwargs()["execution_timeout"] > timedelta(0), name


def test_an_unknown_task_type_names_the_file_and_the_known_types() -> None:
    with pytest.raises(PolicyError, match=r"'extract'.*policies.yml.*extraction"):
        task_policy("extract")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("tasks: {x: {retries: 1, retry_delay: 1}}\ndeadline: {run_finishes_within: 30}", "needs retries"),
        ("tasks: {x: {retries: -1, retry_delay: 1, execution_timeout: 1}}\ndeadline: {run_finishes_within: 30}", "non-negative"),
        ("tasks: {x: {retries: 1, retry_delay: 0, execution_timeout: 1}}\ndeadline: {run_finishes_within: 30}", "retry_delay must be a positive"),
        ("tasks: {x: {retries: 1, retry_delay: 1, execution_timeout: 1, retires: 2}}\ndeadline: {run_finishes_within: 30}", "unknown keys"),
        ("tasks: {}\ndeadline: {}", "run_finishes_within"),
    ],
)  # fmt: skip
def test_a_bad_policies_file_is_refused_with_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "policies.yml"
    path.write_text(body)
    with pytest.raises(PolicyError, match=message):
        load_policies(path)
