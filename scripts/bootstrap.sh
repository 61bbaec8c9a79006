#!/usr/bin/env bash
# Creates the two virtualenvs the project needs, and does nothing when they are up to date:
#   .venv      Airflow, providers, Cosmos, the local stack and the tests
#   .venv-dbt  dbt-core with the Postgres and Snowflake adapters (Cosmos runs dbt from here), sqlfluff
# Needs only Python 3.11 on PATH; uv is installed into .venv and used for speed.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
  done
fi
if [ -z "$python_bin" ] || ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "bootstrap: Python 3.11 is required (found: ${python_bin:-none}). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

# The install recipe is part of the fingerprint: changing it below reinstalls existing venvs.
RECIPE="uv+compileall"
fingerprint() { { cat "$@"; echo "$RECIPE"; } | sha256sum | cut -d' ' -f1; }

ensure_venv() {  # ensure_venv DIR REQUIREMENTS...
  local dir="$1"; shift
  local want; want="$(fingerprint "$@")"
  if [ -f "$dir/.requirements.sha256" ] && [ "$(cat "$dir/.requirements.sha256")" = "$want" ]; then
    return 0
  fi
  echo "bootstrap: installing $dir from $*"
  [ -x "$dir/bin/python" ] || "$python_bin" -m venv "$dir"
  [ -x .venv/bin/uv ] || { [ -x .venv/bin/python ] || "$python_bin" -m venv .venv; .venv/bin/python -m pip install -q uv; }
  local args=(); for req in "$@"; do args+=(-r "$req"); done
  # Bytecode compiled once here, as an image build does: with PYTHONDONTWRITEBYTECODE set (it is on
  # this workplace's machines) every Airflow task process would otherwise recompile its imports.
  VIRTUAL_ENV="$PWD/$dir" .venv/bin/uv pip install -q --python "$dir/bin/python" "${args[@]}"
  # (some packages ship templates that are not Python 3; compileall reports them and goes on)
  "$dir/bin/python" -m compileall -q -j 0 "$dir/lib" >/dev/null || true
  echo "$want" > "$dir/.requirements.sha256"
}

# The Celery shape of the local stack (EXECUTOR=celery) needs a broker: Debian's redis-server
# (PyPI's ships no Linux binary). Installed when missing and this user may install packages.
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "bootstrap: installing redis-server (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >/dev/null \
    || echo "bootstrap: could not install redis-server; only EXECUTOR=celery needs it" >&2
fi

ensure_venv .venv requirements.txt requirements-dev.txt
ensure_venv .venv-dbt requirements-dbt.txt requirements-lint.txt

# The project's own modules too (quick; only changed files are recompiled), so task processes and
# benchmarks do not recompile them on every start.
.venv/bin/python -m compileall -q include dags plugins tests >/dev/null

# `make bench DBT_RUNNER=1` only: Airflow, the providers and dbt in one environment, for the
# in-process dbt comparison (never the image's). The Snowflake connector is left to the resolver:
# the pin in requirements.txt needs a newer certifi than dbt-snowflake allows.
if [ "${1:-}" = "--dbt-runner-venv" ]; then
  mkdir -p .local
  grep -v '^snowflake-connector-python' requirements.txt > .local/runner-requirements.txt
  ensure_venv .local/runner-venv .local/runner-requirements.txt requirements-dev.txt requirements-dbt.txt
fi
