"""The image and the Astro CLI's local environment, checked without Docker (this machine has no
engine): what the build context lets through (.dockerignore), the Dockerfile's RUN steps run in a
clean virtualenv in a copy of that context, and docker-compose.override.yml's services against
airflow_settings.yaml's Connections.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from dev.airflow_settings import load_settings
from include.orchestration.docs import DOCS_CONN_ID, DOCS_URL_VARIABLE, docs_projects_setting

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_ROOT = "/usr/local/airflow"  # where the Astro Runtime image holds the project
NEVER_IN_IMAGE = re.compile(r"^(tests|dev|docs|bench-results|scripts)/|^requirements-(dev|bench|lint)\.txt$")
NEEDED_IN_IMAGE = (
    "Dockerfile",
    "requirements.txt",
    "requirements-dbt.txt",
    "packages.txt",
    "dags/ecommerce_elt.py",
    "plugins/airflow_local_settings.py",
    "include/orchestration/docs.py",
    "include/dbt/ecommerce/dbt_project.yml",
)


# ---------------------------------------------------------------- .dockerignore
def dockerignore_patterns(path: Path = REPO_ROOT / ".dockerignore") -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception ``!``, regex) per line, with Docker's semantics: ``*`` stays within a
    folder, ``**`` spans folders, a pattern matching a folder excludes all below it, last match wins."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((negated, re.compile(_glob_regex(body) + r"(/.*)?")))
    return patterns


def _glob_regex(glob: str) -> str:
    regex, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif glob.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif glob[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif glob[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(glob[i]), i + 1
    return regex


def is_ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for negated, pattern in patterns:
        if pattern.fullmatch(relative):
            ignored = not negated
    return ignored


def build_context(root: Path = REPO_ROOT) -> list[str]:
    """Every file `docker build` would send from ``root`` (the working tree as it is, not git's view)."""
    patterns = dockerignore_patterns(root / ".dockerignore")
    kept: list[str] = []
    for directory, folders, files in os.walk(root):
        base = Path(directory).relative_to(root)
        folders[:] = [f for f in folders if not is_ignored(str(base / f), patterns)]
        kept += [str(base / f) for f in files if not is_ignored(str(base / f), patterns)]
    return sorted(path.removeprefix("./") for path in kept)


def test_the_build_context_holds_what_a_deployment_runs_and_no_dev_test_or_benchmark_code() -> None:
    context = build_context()

    assert not [path for path in context if NEVER_IN_IMAGE.search(path)]
    assert not [path for path in context if path.endswith(".md")], "no docs are needed in the image"
    assert set(NEEDED_IN_IMAGE) <= set(context)
    generated_docs = "/".join(("include", "dbt", "docs", ""))  # (spelled in parts: it exists only after a run)
    assert not any(path.startswith((generated_docs, ".local/", ".venv")) for path in context)


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    kept, sibling = "/".join(("dev", "keep.py")), "devices.py"  # hypothetical
    patterns = [
        (False, re.compile(_glob_regex("**/__pycache__") + r"(/.*)?")),
        (False, re.compile(_glob_regex("dev") + r"(/.*)?")),
        (True, re.compile(_glob_regex(kept) + r"(/.*)?")),
    ]
    assert is_ignored("dags/__pycache__/x.pyc", patterns) and is_ignored("__pycache__/x.pyc", patterns)
    assert is_ignored("dev/stack.py", patterns) and not is_ignored(kept, patterns)
    assert not is_ignored(sibling, patterns)


# ---------------------------------------------------------------- Dockerfile
def dockerfile_instructions(path: Path = REPO_ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    return [(entry.split(None, 1)[0].upper(), entry.split(None, 1)[1]) for entry in logical]


def test_the_images_docs_setting_is_the_one_the_local_settings_give() -> None:
    env = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "ENV")
    values = dict(token.split("=", 1) for token in shlex.split(env))
    docs_url = load_settings(REPO_ROOT / "airflow_settings.yaml").variables[DOCS_URL_VARIABLE]
    assert json.loads(values["AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"]) == json.loads(
        docs_projects_setting(docs_url, DOCS_CONN_ID)
    )


def test_the_image_sets_the_airflow_configuration_the_local_stack_runs_with() -> None:
    from dev.stack import IMAGE_AIRFLOW_CONFIG

    env = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "ENV")
    values = dict(token.split("=", 1) for token in shlex.split(env))
    assert {name: values.get(name) for name in IMAGE_AIRFLOW_CONFIG} == IMAGE_AIRFLOW_CONFIG


@pytest.mark.slow
def test_the_dockerfiles_run_steps_build_the_dbt_venv_and_the_manifest_in_a_copy_of_the_context(
    tmp_path: Path,
) -> None:
    """The RUN steps as the image runs them, with the image's paths moved under ``tmp_path``:
    ``python`` is a clean virtualenv with requirements.txt (what the Runtime's ONBUILD installs)."""
    image, scratch = tmp_path / IMAGE_ROOT.lstrip("/"), tmp_path / "tmp"
    scratch.mkdir(parents=True)
    for relative in build_context():
        (image / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, image / relative)
    python = _runtime_python(tmp_path / "runtime")
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            source, destination = args.split()[-2:]
            shutil.copy2(image / source, scratch / Path(destination).name)
        elif instruction == "RUN":
            command = args.replace("/tmp/", f"{scratch}/").replace(IMAGE_ROOT, str(image))  # (tmp_path is in /tmp)
            env = {
                "PATH": f"{python.parent}:/usr/bin:/bin",
                "HOME": str(tmp_path),
                "AIRFLOW_HOME": str(tmp_path / "ah"),
            }
            result = subprocess.run(["bash", "-c", command], cwd=image, env=env, capture_output=True, text=True)
            assert result.returncode == 0, f"RUN {args}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"

    assert (image / "dbt_venv" / "bin" / "dbt").exists()
    manifest = json.loads((image / "include/dbt/ecommerce/target/manifest.json").read_text())
    assert "model.ecommerce.fct_orders" in manifest["nodes"]


def _runtime_python(venv: Path) -> Path:
    """A clean virtualenv with the image's requirements.txt, standing in for the Runtime's Python
    (Airflow itself comes from requirements-dev.txt's pin, as the Runtime pins it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    airflow_pin = next(
        line
        for line in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines()
        if line.startswith("apache-airflow==")
    )
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            airflow_pin,
            "-r",
            str(REPO_ROOT / "requirements.txt"),
        ],
        check=True,
        capture_output=True,
    )
    return venv / "bin" / "python"


# ---------------------------------------------------------------- docker-compose.override.yml
def compose_services() -> dict[str, dict]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.override.yml").read_text())["services"]


def _command(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def _flag(command: str, *names: str) -> str | None:
    tokens = shlex.split(command.replace('"', " ").replace("'", " "))
    for i, token in enumerate(tokens[:-1]):
        if token in names:
            return tokens[i + 1]
    return None


def test_the_compose_services_are_the_connections_hosts_with_their_ports_and_logins() -> None:
    services = compose_services()
    settings = load_settings(REPO_ROOT / "airflow_settings.yaml")
    for conn_id in ("ecommerce_source", "warehouse_postgres"):
        conn = settings.connection(conn_id)
        env = services[conn.host or ""]["environment"]
        assert (conn.port, conn.login, conn.password, conn.schema) == (
            5432,
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            env["POSTGRES_DB"],
        ), conn_id
    stripe = settings.connection("stripe_api")
    stub = _command(services["stripe-stub"])
    assert stripe.host == f"http://stripe-stub:{_flag(stub, '--port')}" and _flag(stub, "--api-key") == stripe.password
    slack = settings.connection("slack_alerts")
    receiver = _command(services["slack-receiver"])
    assert slack.host == f"http://slack-receiver:{_flag(receiver, '--port')}/services"
    assert _flag(receiver, "--token") == slack.password
    snowflake = settings.connection("warehouse_snowflake")
    emulator = _command(services["snowflake-emulator"])
    assert snowflake.host == snowflake.extra["host"] == "snowflake-emulator"
    assert str(snowflake.port) == str(snowflake.extra["port"]) == _flag(emulator, "-p")


def test_every_service_a_connection_names_is_in_the_compose_file() -> None:
    services = compose_services()
    for conn in load_settings(REPO_ROOT / "airflow_settings.yaml").connections:
        host = (conn.host or "").split("://")[-1].split(":")[0].split("/")[0]
        assert not host or host in services, f"{conn.conn_id}: no compose service {host!r}"


def test_the_docs_location_is_on_a_volume_the_api_server_and_the_workers_share() -> None:
    """``astro dev start``: the scheduler (LocalExecutor) writes the docs, the API server serves them."""
    docs_url = load_settings(REPO_ROOT / "airflow_settings.yaml").variables[DOCS_URL_VARIABLE]
    services = compose_services()
    for component in ("scheduler", "api-server"):
        mounts = [volume.split(":")[1] for volume in services[component]["volumes"]]
        assert any(docs_url.removeprefix("file://").startswith(mount + "/") for mount in mounts), component


def test_each_python_service_runs_a_module_its_mounts_hold() -> None:
    """The stub, the receiver and the seed run `python -m <module>` from the repository mounted into
    a plain python image: moving a module without its mount would leave `astro dev start` without them."""
    checked = []
    for name, service in compose_services().items():
        module = _flag(_command(service), "-m")
        if module is None:
            continue
        in_container = PurePosixPath(service["working_dir"], *module.split(".")).with_suffix(".py")
        on_host = [
            Path(host) / in_container.relative_to(container)
            for host, container, *_ in (volume.split(":") for volume in service["volumes"])
            if host.startswith(".") and in_container.is_relative_to(container)
        ]
        assert on_host and (REPO_ROOT / on_host[0]).is_file(), f"{name}: {module} is not in its mounts"
        checked.append(name)
    assert {"shop-seed", "stripe-stub", "slack-receiver"} <= set(checked)
