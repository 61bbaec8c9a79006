"""``make lint``: ruff (lint and format check) over the Python code, sqlfluff over the dbt project.

sqlfluff's dbt templater compiles the project, and dbt's compile opens a warehouse connection, so
the SQL lint runs against a throwaway embedded PostgreSQL (the same server the local stack and the
tests run), with a profile that exists only for the run. ``--fix`` applies what the tools can fix.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from dev.embedded_postgres import EmbeddedPostgres, find_free_port
from include.orchestration.manifest import DBT_PROJECT_DIR, PARSE_PROFILE, REPO_ROOT, dbt_executable, project_names


def ruff(fix: bool) -> int:
    ruff_bin = str(Path(sys.executable).parent / "ruff")
    check = subprocess.run([ruff_bin, "check", *(["--fix"] if fix else []), "."], cwd=REPO_ROOT).returncode
    formatted = subprocess.run([ruff_bin, "format", *([] if fix else ["--check"]), "."], cwd=REPO_ROOT).returncode
    return check or formatted


def sqlfluff(fix: bool) -> int:
    sqlfluff_bin = str(dbt_executable().parent / "sqlfluff")
    with tempfile.TemporaryDirectory(prefix="sqlfluff-") as scratch:
        server = EmbeddedPostgres(Path(scratch) / "postgres", find_free_port())
        server.start()
        try:
            server.ensure_database("parse_only")
            profile = (
                PARSE_PROFILE.format(profile=project_names().profile)
                .replace("host: localhost", f"host: {server.host}")
                .replace("port: 5432", f"port: {server.port}")
                .replace("user: parse_only", "user: postgres")
                .replace('password: ""', f"password: {server.password}")
            )
            Path(scratch, "profiles.yml").write_text(profile)
            env = {**os.environ, "DBT_PROFILES_DIR": scratch, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
            command = [sqlfluff_bin, "fix" if fix else "lint", str(DBT_PROJECT_DIR.relative_to(REPO_ROOT))]
            return subprocess.run(command, cwd=REPO_ROOT, env=env).returncode
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="apply the fixes the tools can make")
    parser.add_argument("--sql-only", action="store_true", help="sqlfluff alone (the pre-commit hook)")
    args = parser.parse_args()
    failed = (0 if args.sql_only else ruff(args.fix)) | sqlfluff(args.fix)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
