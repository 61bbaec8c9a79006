"""How big the synthetic shop is, per named scale, and the fixed clock it is generated against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

UTC = UTC
# Every timestamp derives from this anchor, never from the wall clock: the same seed gives the
# same shop on every machine and every day.
HISTORY_END = datetime(2026, 11, 1, tzinfo=UTC)

STATUSES = ("placed", "shipped", "completed", "returned", "cancelled")
STATUS_WEIGHTS = (10, 15, 60, 5, 10)
CHANNELS = ("organic", "paid_search", "social", "email", "affiliate")
CHANNEL_WEIGHTS = (35, 25, 20, 12, 8)
CATEGORIES = ("apparel", "home", "outdoor", "toys", "beauty", "electronics")
COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "CA", "AU", "NL", "ES")


@dataclass(frozen=True)
class Scale:
    name: str
    customers: int
    orders: int
    products: int
    history_days: int  # orders spread over this many days before HISTORY_END
    spend_days: int  # marketing files: one per day for the last spend_days days
    campaigns_per_channel: int

    @property
    def history_start(self) -> datetime:
        return HISTORY_END - timedelta(days=self.history_days)


SCALES: dict[str, Scale] = {
    "small": Scale(
        "small", customers=400, orders=2_000, products=60, history_days=60, spend_days=14, campaigns_per_channel=2
    ),
    "medium": Scale(
        "medium",
        customers=20_000,
        orders=100_000,
        products=500,
        history_days=365,
        spend_days=365,
        campaigns_per_channel=3,
    ),
    "large": Scale(
        "large",
        customers=200_000,
        orders=1_000_000,
        products=2_000,
        history_days=365,
        spend_days=365,
        campaigns_per_channel=30,
    ),
}


def scale_named(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale '{name}': choose one of {', '.join(SCALES)}") from None
