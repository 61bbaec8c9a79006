"""Seeds the synthetic shop once: the one place that decides whether data must be generated.

Used by the embedded stack (``dev.stack``) and by the ``shop-seed`` service of
``docker-compose.override.yml``. A source that already holds the shop is left alone, so
restarts never regenerate or duplicate data.

Run: ``python -m dev.seed --source-dsn URI --charges-db PATH --landing-dir DIR``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import psycopg


def shop_is_seeded(source_dsn: str, charges_db: Path) -> bool:
    with psycopg.connect(source_dsn) as conn:
        has_orders = conn.execute("SELECT to_regclass('public.orders') IS NOT NULL").fetchone()[0]
    return bool(has_orders) and charges_db.exists()


def ensure_shop_data(source_dsn: str, charges_db: Path, landing_dir: Path, scale: str, seed: int) -> bool:
    """Generate the shop unless it is there already; True when data was generated."""
    if shop_is_seeded(source_dsn, charges_db):
        return False
    from dev import shopgen

    landing_dir.mkdir(parents=True, exist_ok=True)
    charges_db.parent.mkdir(parents=True, exist_ok=True)
    print(f"Generating the synthetic shop ({scale}, seed {seed}) ...", flush=True)
    shopgen.generate(scale=scale, seed=seed, source_dsn=source_dsn, charges_db=charges_db, landing_dir=landing_dir)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dsn", required=True)
    parser.add_argument("--charges-db", type=Path, required=True)
    parser.add_argument("--landing-dir", type=Path, required=True)
    parser.add_argument("--scale", choices=("small", "medium", "large"), default="small")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    generated = ensure_shop_data(args.source_dsn, args.charges_db, args.landing_dir, args.scale, args.seed)
    print("shop data generated" if generated else "shop data already present; nothing to do")


if __name__ == "__main__":
    main()
