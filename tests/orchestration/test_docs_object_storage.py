"""dbt docs through S3: the docs task's publish function writes to a real S3 API server (moto in
server mode) through the Amazon provider's `aws` Connection with an ``endpoint_url``, and Cosmos's
plugin, served over HTTP by uvicorn, reads them back from there, as the API server of a
deployment does. The docs must be those of the run that published them: a model that exists only
in this run's copy of the project appears in the served manifest.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dev.embedded_postgres import find_free_port
from include.orchestration.docs import DOCS_CONN_ID, DOCS_SLUG, docs_projects_setting, publish_docs
from include.orchestration.manifest import DBT_PROJECT_DIR

pytestmark = pytest.mark.slow
BUCKET = "ecommerce-dbt-docs"
DOCS_URL = f"s3://{BUCKET}/docs/{DOCS_SLUG}"
PROBE_MODEL = "zz_docs_probe"


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """moto's S3 API server on 127.0.0.1 with the docs bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = find_free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local-secret",
    )
    client.create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def docs_on_s3(s3_endpoint: str, new_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The Connections and the plugin setting a deployment has, pointing at moto and an empty warehouse."""
    from psycopg.conninfo import conninfo_to_dict

    warehouse = conninfo_to_dict(new_database("docs_warehouse"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE_POSTGRES",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": warehouse["host"],
                "port": int(warehouse["port"]),
                "login": warehouse.get("user"),
                "password": warehouse.get("password"),
                "schema": warehouse["dbname"],
            }
        ),
    )
    storage = {
        "conn_type": "aws",
        "login": "local",
        "password": "local-secret",
        "extra": json.dumps({"endpoint_url": s3_endpoint, "region_name": "us-east-1"}),
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{DOCS_CONN_ID.upper()}", json.dumps(storage))
    monkeypatch.setenv("AIRFLOW__COSMOS__DBT_DOCS_PROJECTS", docs_projects_setting(DOCS_URL, DOCS_CONN_ID))


@pytest.fixture
def project_with_a_new_model(tmp_path: Path) -> Path:
    project = tmp_path / "ecommerce"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    (project / "models" / "marts" / f"{PROBE_MODEL}.sql").write_text("select 1 as probe\n")
    return project


@pytest.fixture
def plugin_server(docs_on_s3: None) -> Iterator[str]:
    """Cosmos's Airflow 3 docs app over HTTP (the API server mounts it at /cosmos)."""
    import uvicorn
    from cosmos.plugin.airflow3 import create_cosmos_fastapi_app

    port = find_free_port()
    config = uvicorn.Config(create_cosmos_fastapi_app(), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the docs app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read()


def test_docs_published_to_s3_are_served_by_the_plugin_as_that_run_made_them(
    project_with_a_new_model: Path, plugin_server: str
) -> None:
    assert publish_docs("postgres", DOCS_URL, DOCS_CONN_ID, project_with_a_new_model) == DOCS_URL

    served = json.loads(fetch(f"{plugin_server}/{DOCS_SLUG}/manifest.json"))
    built = json.loads((project_with_a_new_model / "target" / "docs-postgres" / "manifest.json").read_text())
    assert f"model.ecommerce.{PROBE_MODEL}" in served["nodes"]
    assert served["metadata"]["invocation_id"] == built["metadata"]["invocation_id"]
    catalog = json.loads(fetch(f"{plugin_server}/{DOCS_SLUG}/catalog.json"))
    assert catalog["metadata"]["invocation_id"] == built["metadata"]["invocation_id"]
    assert b"dbt" in fetch(f"{plugin_server}/{DOCS_SLUG}/dbt_docs_index.html").lower()


def test_publishing_where_the_plugin_does_not_read_fails(docs_on_s3: None, tmp_path: Path) -> None:
    from include.orchestration.docs import DocsLocationError, check_plugin_reads

    with pytest.raises(DocsLocationError, match="AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"):
        check_plugin_reads(f"s3://{BUCKET}/elsewhere")
