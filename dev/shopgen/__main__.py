"""CLI: ``python -m dev.shopgen generate|changes ...`` (see the package docstring)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dev.shopgen import SCALES, apply_changes, generate


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dev.shopgen")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("generate", "changes"):
        command = commands.add_parser(name)
        command.add_argument("--source-dsn", required=True)
        command.add_argument("--charges-db", type=Path, required=True)
        command.add_argument("--landing-dir", type=Path, required=name == "generate")
        command.add_argument("--seed", type=int, default=42 if name == "generate" else 7)
    commands.choices["generate"].add_argument("--scale", choices=tuple(SCALES), default="small")
    commands.choices["changes"].add_argument("--days", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.command == "generate":
        generate(args.scale, args.seed, args.source_dsn, args.charges_db, args.landing_dir)
        print(f"generated the {args.scale} shop in {time.perf_counter() - started:.1f}s")
    else:
        summary = apply_changes(args.days, args.source_dsn, args.charges_db, args.landing_dir, args.seed)
        print(f"applied {args.days} day(s) of changes in {time.perf_counter() - started:.1f}s: {summary}")


if __name__ == "__main__":
    main()
