"""dbt docs for the Airflow UI: generated after a successful build, served by Cosmos's plugin.

Cosmos's Airflow 3 plugin reads ``[cosmos] dbt_docs_projects`` (JSON: slug → ``dir``, ``name``,
optional ``conn_id`` for object storage) and serves ``<dir>/index.html``, ``manifest.json`` and
``catalog.json`` under ``/cosmos/<slug>/`` with a menu entry. This module writes those three files
into :data:`DOCS_DIR` — the same path below the project root locally and in the Astro image —
and :func:`docs_projects_setting` is the one place that setting's value is built.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from include.orchestration.manifest import DBT_PROJECT_DIR, REPO_ROOT

DOCS_SLUG = "ecommerce"
DOCS_NAME = "E-commerce dbt docs"
DOCS_DIR = REPO_ROOT / "include" / "dbt" / "docs" / DOCS_SLUG
DOCS_FILES = ("index.html", "manifest.json", "catalog.json")


def docs_projects_setting(docs_dir: Path = DOCS_DIR) -> str:
    """The value of ``AIRFLOW__COSMOS__DBT_DOCS_PROJECTS`` for a project rooted where ``docs_dir`` is."""
    return json.dumps({DOCS_SLUG: {"dir": str(docs_dir), "name": DOCS_NAME, "index": "index.html"}})


def publish_docs(warehouse: str, docs_dir: Path = DOCS_DIR) -> Path:
    """``dbt docs generate`` against ``warehouse``, then swap the files in as a whole.

    dbt writes into a target folder of its own per warehouse that outlives the run, so the next
    generation re-parses only what changed (dbt's partial parsing keeps its state there).
    """
    from include.orchestration.dbt_cli import run_dbt  # imports Cosmos: only where docs are built

    target = DBT_PROJECT_DIR / "target" / f"docs-{warehouse}"
    run_dbt(["docs", "generate"], warehouse, target_path=target)
    docs_dir.mkdir(parents=True, exist_ok=True)
    for name in DOCS_FILES:
        staged = docs_dir / f".{name}.new"
        shutil.copyfile(target / name, staged)
        staged.replace(docs_dir / name)  # a reader sees the old file or the new one, never half
    return docs_dir
