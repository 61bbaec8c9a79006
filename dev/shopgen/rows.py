"""Row builders for the synthetic shop: customers, products, orders with their lines and charges.

One seeded ``random.Random`` drives everything, so a seed fixes the shop. The mix of cases is the
point: cancelled and returned orders, orders without lines, unpaid and partly paid orders, failed
and pending charges, full and partial refunds, and charges whose order does not exist.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dev.shopgen.scales import (
    CATEGORIES,
    CHANNEL_WEIGHTS,
    CHANNELS,
    COUNTRIES,
    STATUS_WEIGHTS,
    STATUSES,
)

FIRST_NAMES = ("Ada", "Bo", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena")
LAST_NAMES = ("Smith", "Garcia", "Müller", "Okafor", "Tanaka", "Rossi", "Novak", "Silva", "Cohen", "Larsen")
ORPHAN_ORDER_OFFSET = 900_000_000  # metadata.order_id of charges that match no order


@dataclass
class Order:
    row: tuple
    customer_id: int
    net_cents: int
    items: list[tuple] = field(default_factory=list)


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def cents(text: str) -> int:
    whole, _, fraction = text.partition(".")
    return int(whole) * 100 + int((fraction + "00")[:2])


class RowFactory:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def customer(self, customer_id: int, created_at: datetime) -> tuple:
        rng = self.rng
        updated_at = created_at + timedelta(seconds=rng.randint(0, 3 * 86_400)) if rng.random() < 0.2 else created_at
        return (
            customer_id,
            f"customer{customer_id}@example.com",
            rng.choice(FIRST_NAMES),
            rng.choice(LAST_NAMES),
            rng.choice(COUNTRIES),
            created_at,
            updated_at,
        )

    def product(self, product_id: int, created_at: datetime) -> tuple:
        rng = self.rng
        category = rng.choice(CATEGORIES)
        price = rng.randint(299, 24_999)
        return (
            product_id,
            f"SKU-{product_id:06d}",
            f"{category.title()} item {product_id}",
            category,
            money(price),
            rng.random() > 0.05,
            created_at,
            created_at,
        )

    def order(
        self, order_id: int, customer_id: int, ordered_at: datetime, prices: list[int], first_item_id: int
    ) -> Order:
        """An order and its lines (2% have none); updated_at follows the fulfilment."""
        rng = self.rng
        status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        channel = rng.choices(CHANNELS, CHANNEL_WEIGHTS)[0]
        updated_at = ordered_at + timedelta(seconds=rng.randint(0, 5 * 86_400)) if status != "placed" else ordered_at
        order = Order(
            (order_id, customer_id, status, channel, "USD", ordered_at, ordered_at, updated_at), customer_id, 0
        )
        line_count = 0 if rng.random() < 0.02 else rng.randint(1, 5)
        for offset in range(line_count):
            product_id = rng.randrange(len(prices)) + 1
            quantity = rng.choices((1, 2, 3, 4), (70, 18, 8, 4))[0]
            gross = prices[product_id - 1] * quantity
            discount = gross // 10 if rng.random() < 0.2 else 0
            order.net_cents += gross - discount
            order.items.append(
                (
                    first_item_id + offset,
                    order_id,
                    product_id,
                    quantity,
                    money(prices[product_id - 1]),
                    money(discount),
                    ordered_at,
                    ordered_at,
                )
            )
        return order

    def charges_for(self, order: Order, status: str, ordered_at: datetime) -> list[dict[str, Any]]:
        """The Stripe charges an order produced: none, failed, pending, paid, part-paid, refunded."""
        rng = self.rng
        if order.net_cents <= 0:
            return []
        created = int(ordered_at.timestamp()) + rng.randint(5, 900)
        draw = rng.random()
        if status == "cancelled":
            if draw < 0.5:
                return []
            return [self.charge(order, created, order.net_cents, "succeeded", refunded=order.net_cents)]
        if draw < 0.08:
            return []  # unpaid
        if draw < 0.13:
            failed = self.charge(order, created, order.net_cents, "failed")
            if rng.random() < 0.6:
                return [failed, self.charge(order, created + 120, order.net_cents, "succeeded")]
            return [failed]
        if draw < 0.14:
            return [self.charge(order, created, order.net_cents, "pending")]
        amount = order.net_cents // 2 if draw < 0.15 else order.net_cents  # part-paid
        refunded = amount if status == "returned" else (amount // 4 if rng.random() < 0.03 else 0)
        return [self.charge(order, created, amount, "succeeded", refunded=refunded)]

    def orphan_charge(self, number: int, created: int) -> dict[str, Any]:
        orphan = Order((ORPHAN_ORDER_OFFSET + number,), 0, 0)
        return self.charge(orphan, created, self.rng.randint(500, 20_000), "succeeded")

    def charge(self, order: Order, created: int, amount: int, status: str, refunded: int = 0) -> dict[str, Any]:
        rng = self.rng
        paid = status == "succeeded"
        return {
            "id": f"ch_{rng.getrandbits(96):024x}",
            "object": "charge",
            "amount": amount,
            "amount_captured": amount if paid else 0,
            "amount_refunded": refunded,
            "captured": paid,
            "created": created,
            "currency": "usd",
            "customer": f"cus_{order.customer_id:010d}",
            "description": f"Order {order.row[0]}",
            "failure_code": "card_declined" if status == "failed" else None,
            "failure_message": "Your card was declined." if status == "failed" else None,
            "livemode": False,
            "metadata": {"order_id": str(order.row[0])},
            "paid": paid,
            "payment_method_details": {
                "type": "card",
                "card": {"brand": rng.choice(("visa", "mastercard", "amex")), "last4": f"{rng.randint(0, 9999):04d}"},
            },
            "refunded": paid and refunded == amount,
            "status": status,
        }


def refund(charge: dict[str, Any], amount_refunded: int) -> dict[str, Any]:
    """The charge after a (further) refund: only ``amount_refunded`` and ``refunded`` change."""
    amount_refunded = min(charge["amount"], amount_refunded)
    return {**charge, "amount_refunded": amount_refunded, "refunded": amount_refunded == charge["amount"]}
