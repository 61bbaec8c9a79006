"""Every repository path named in the docs, comments and docstrings exists, and none points
outside the repository: a clone is all a reader has."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".sql", ".sh", ".txt", ".toml", ".cfg", ".ini", ".json"}
TEXT_NAMES = {"Makefile", "Dockerfile", "run"}  # (ignore lists name what may not exist)
# A path-like token: directories separated by "/" (optionally starting with ./ or ../).
PATH_TOKEN = re.compile(r"(?<![\w./:@-])((?:\.{1,2}/)*(?:[\w.-]+/)+[\w.-]*)")
# The steering folder beside the clone (spelled in two parts so this file does not name it).
OUTSIDE_FOLDER = "shared" + "/"
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO_ROOT / name for name in listed if (REPO_ROOT / name).is_file()]


def _is_text(path: Path) -> bool:
    return path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES


def _ignored(path: Path) -> bool:
    """Generated places (dbt's target/, .local/, benchmark output) are named but not committed."""
    relative = path.relative_to(REPO_ROOT)
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", str(relative)], cwd=REPO_ROOT).returncode == 0


def _broken_references(path: Path) -> list[str]:
    top_level = {entry.name for entry in REPO_ROOT.iterdir() if entry.name != ".git"}
    problems = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        where = f"{path.relative_to(REPO_ROOT)}:{number}"
        if OUTSIDE_FOLDER in line:
            problems.append(f"{where}: names the folder beside the repository; say it in docs/ instead")
        candidates = [(match, path.parent) for match in MARKDOWN_LINK.findall(line) if "://" not in match]
        for token in PATH_TOKEN.findall(line):
            token = token.rstrip(".,;:")
            if token.startswith("../"):
                candidates.append((token, path.parent))
            elif token.split("/", 1)[0].removeprefix("./") in top_level:
                candidates.append((token.removeprefix("./"), REPO_ROOT))
        for token, base in candidates:
            if any(char in token for char in "*{}<>$"):
                continue  # a pattern or a template, not a path
            target = Path(os.path.normpath(base / token))  # not resolve(): .venv's python links out
            if not target.is_relative_to(REPO_ROOT):
                problems.append(f"{where}: {token} points outside the repository")
            elif not target.exists() and not _ignored(target):
                problems.append(f"{where}: {token} does not exist")
    return problems


def test_every_named_repository_path_exists() -> None:
    problems = [problem for path in _tracked_files() if _is_text(path) for problem in _broken_references(path)]
    assert not problems, "paths named in the repository that a clone does not have:\n" + "\n".join(problems)


MISSING = "include/" + "no_such_module.py"


def test_the_check_sees_a_broken_reference(tmp_path: Path) -> None:
    probe = REPO_ROOT / "docs" / f"_probe_{tmp_path.name}.md"
    probe.write_text(f"See [the contract](../../{OUTSIDE_FOLDER}CONTRACT.md) and {MISSING}.\n")
    try:
        problems = _broken_references(probe)
    finally:
        probe.unlink()
    assert any("beside the repository" in p for p in problems) and any("outside" in p for p in problems)
    assert any(MISSING in p for p in problems), problems
