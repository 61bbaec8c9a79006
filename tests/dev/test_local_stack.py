"""The embedded local stack starts, restarts and stops without losing data, on real processes."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest

from dev.airflow_client import run_dag_and_wait
from dev.embedded_postgres import PortInUseError, find_free_port
from dev.stack import PIPELINE_DAG_ID, LocalStack, StackLayout


@pytest.fixture
def stack(tmp_path) -> Iterator[LocalStack]:
    local = LocalStack(StackLayout(tmp_path / "local"), airflow_port=find_free_port())
    yield local
    local.down()


def stripe_charge_count(local: LocalStack) -> int:
    stripe = local.settings.connection("stripe_api")
    request = urllib.request.Request(
        f"{stripe.host}/v1/charges?limit=100", headers={"Authorization": f"Bearer {stripe.password}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return len(json.loads(response.read())["data"])


def source_order_count(local: LocalStack) -> int:
    with psycopg.connect(local.source_dsn()) as conn:
        return int(conn.execute("SELECT count(*) FROM public.orders").fetchone()[0])


@pytest.mark.slow
def test_start_twice_then_stop_and_restart_keeps_everything(stack: LocalStack) -> None:
    stack.up(scale="small")
    orders = source_order_count(stack)
    assert orders > 0
    assert stripe_charge_count(stack) > 0
    assert any(stack.layout.marketing_landing_dir.glob("marketing_spend_*.csv"))
    pids = {name: state for name, state in stack.status().items()}

    stack.up(scale="small")  # a second start changes nothing
    assert stack.status() == pids
    assert source_order_count(stack) == orders

    with psycopg.connect(stack.warehouse_dsn()) as conn:
        conn.execute("CREATE TABLE survives_restart (note text)")
        conn.execute("INSERT INTO survives_restart VALUES ('kept')")

    stack.down()
    assert all(state == "stopped" for state in stack.status().values())

    restarted = LocalStack(stack.layout, airflow_port=stack.ports.airflow)
    assert restarted.ports == stack.ports  # same ports, so connections stay valid
    restarted.up(scale="small")
    assert source_order_count(restarted) == orders
    assert stripe_charge_count(restarted) > 0
    with psycopg.connect(restarted.warehouse_dsn()) as conn:
        assert conn.execute("SELECT note FROM survives_restart").fetchall() == [("kept",)]


@pytest.mark.parametrize("service", ["postgres", "stripe", "slack", "snowflake"])
def test_a_port_in_use_is_a_clear_error(stack: LocalStack, service: str) -> None:
    port = getattr(stack.ports, service)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=rf"port {port} .*in use.*ports.json"):
            stack.up(scale="small")
    assert not stack.postgres.is_running()  # refused before starting anything


def test_the_airflow_port_in_use_names_the_flag(stack: LocalStack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.ports.airflow))
        squatter.listen()
        with pytest.raises(PortInUseError, match="--airflow-port"):
            stack.up(scale="small", with_airflow=True)


@pytest.mark.slow
def test_airflow_runs_the_pipeline_dag_and_serves_the_ui(stack: LocalStack) -> None:
    stack.up(scale="small", with_airflow=True)
    base_url = f"http://127.0.0.1:{stack.ports.airflow}"
    assert run_dag_and_wait(base_url, PIPELINE_DAG_ID) == "success"
    with urllib.request.urlopen(base_url + "/", timeout=10) as response:
        assert response.status == 200
        assert b"<html" in response.read().lower()
    # the execution API was built by the stack's own request, before any task's
    answered = re.findall(r"path=(/execution/\S*)", (stack.layout.logs_dir / "airflow-api-server.log").read_text())
    assert answered[0] == "/execution/health"
    assert any(path.endswith("/run") for path in answered[1:])
