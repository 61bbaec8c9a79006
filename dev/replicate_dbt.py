"""Copies the dbt project with every model replicated N times, for the "cost vs model count" benchmark.

The dbt stage of the pipeline (``dbt parse``, the Cosmos render, one task per model) grows with
the number of models; the real project is too small to show how. This generator writes a copy of
the project in which each model exists ``factor`` times (×1, ×4, ×16, ...) so the same benchmark
can be run against projects of growing size and the cost plotted against the model count.

Copy 1 is the original project, unchanged. Copy k (2..factor) adds ``<model>_r<k>.sql`` next to
each model, its ``ref()`` calls pointing at the other models of copy k (``source()`` calls stay:
every copy reads the same raw tables), and ``<yml stem>_r<k>.yml`` with the model properties
(tests, contracts, columns) of copy k. Unit tests and singular tests stay with copy 1 only.

    python -m dev.replicate_dbt --factor 4 --target /tmp/replica
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from include.orchestration.manifest import DBT_PROJECT_DIR

SKIP_DIRS = ("target", "logs", "dbt_packages")


def top_level_skips(source_dir: Path, folder: str, names: list[str]) -> set[str]:
    """dbt's own output folders, skipped at the project's top level only."""
    return set(SKIP_DIRS) & set(names) if Path(folder) == source_dir else set()


def model_names(models_dir: Path) -> set[str]:
    """Names of the project's models (every ``.sql`` file under ``models/``)."""
    return {path.stem for path in models_dir.rglob("*.sql")}


def ref_pattern(names: set[str]) -> re.Pattern[str]:
    """Matches ``ref('<model>')`` / ``ref("<model>")`` (optionally with further arguments) of a project model."""
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(rf"""(\bref\(\s*)(['"])({alternatives})\2(?=\s*[,)])""")


def rewrite_refs(text: str, pattern: re.Pattern[str], suffix: str) -> str:
    return pattern.sub(lambda match: f"{match[1]}{match[2]}{match[3]}{suffix}{match[2]}", text)


def rewrite_value(value: Any, pattern: re.Pattern[str], suffix: str) -> Any:
    """Rewrites every ref() inside the strings of a loaded YAML value, recursively."""
    if isinstance(value, str):
        return rewrite_refs(value, pattern, suffix)
    if isinstance(value, list):
        return [rewrite_value(item, pattern, suffix) for item in value]
    if isinstance(value, dict):
        return {key: rewrite_value(item, pattern, suffix) for key, item in value.items()}
    return value


def model_yaml_files(models_dir: Path) -> list[Path]:
    """YAML files that declare model properties (a top-level ``models:`` key)."""
    files = sorted([*models_dir.rglob("*.yml"), *models_dir.rglob("*.yaml")])
    return [path for path in files if isinstance(doc := yaml.safe_load(path.read_text()), dict) and doc.get("models")]


def replicate_yaml(path: Path, pattern: re.Pattern[str], suffix: str) -> None:
    """Writes ``<stem><suffix>.yml`` with the file's model entries renamed and their refs rewritten."""
    entries = yaml.safe_load(path.read_text())["models"]
    copies = [{**rewrite_value(entry, pattern, suffix), "name": f"{entry['name']}{suffix}"} for entry in entries]
    document = {"version": 2, "models": copies}
    path.with_name(f"{path.stem}{suffix}.yml").write_text(yaml.safe_dump(document, sort_keys=False))


def replicate_copy(models_dir: Path, sql_files: list[Path], yaml_files: list[Path], copy: int) -> None:
    suffix = f"_r{copy}"
    pattern = ref_pattern({path.stem for path in sql_files})
    for path in sql_files:
        path.with_name(f"{path.stem}{suffix}.sql").write_text(rewrite_refs(path.read_text(), pattern, suffix))
    for path in yaml_files:
        replicate_yaml(path, pattern, suffix)


def replicate_project(factor: int, target_dir: Path, source_dir: Path = DBT_PROJECT_DIR) -> Path:
    """Copy the dbt project to target_dir/ecommerce with each model present `factor` times; returns the project path."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    project = Path(target_dir) / source_dir.name
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(source_dir, project, ignore=lambda folder, names: top_level_skips(source_dir, folder, names))
    models_dir = project / "models"
    sql_files = sorted(models_dir.rglob("*.sql"))  # the originals, listed before any copy is written
    yaml_files = model_yaml_files(models_dir)
    for copy in range(2, factor + 1):
        replicate_copy(models_dir, sql_files, yaml_files, copy)
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, required=True, help="how many times each model is present")
    parser.add_argument("--target", type=Path, required=True, help="directory that receives ecommerce/")
    args = parser.parse_args()
    project = replicate_project(args.factor, args.target)
    print(project)
    print(f"models: {len(model_names(project / 'models'))}")


if __name__ == "__main__":
    main()
