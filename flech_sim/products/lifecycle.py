"""The market life cycle as a SimPy process: the only module of the products that waits on the clock.

    requested -> open -> gate_closed -> cleared -> delivered -> settled
                   \\-> cancelled                \\-> failed (clearing error)

One process per market sleeps until its next gate time and calls the product
for what happens there (:meth:`Product.close_gate`, :meth:`Product.clear`,
:meth:`Product.settle`); clearing itself is the pure :mod:`.book`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from ..events import MarketEnded
from .market import Market, MarketState

if TYPE_CHECKING:
    from .base import Product

__all__ = ["await_meter_data", "life_cycle"]


def life_cycle(product: Product, market: Market) -> Generator[simpy.Event, Any, None]:
    env = product.s.env
    req = market.request
    yield env.timeout(req.gate_close - product.now)
    if market.state is MarketState.CANCELLED:
        return
    product.close_gate(market)
    product.clear(market)
    if market.state is MarketState.FAILED:
        product.s.events.publish(MarketEnded(product.product_id, market.market_id, str(market.state)))
        return
    yield env.timeout(max(0, req.delivery_end - product.now))
    market.state = MarketState.DELIVERED
    yield from await_meter_data(product, market)
    for st in product.settle(market):
        product.send_statement(market, st)
    market.state = MarketState.SETTLED
    market.settled_at = product.now
    product.s.events.publish(MarketEnded(product.product_id, market.market_id, str(market.state)))
    product.retire(market)


def await_meter_data(product: Product, market: Market) -> Generator[simpy.Event, Any, None]:
    """Wait until the meter data settlement needs is in, or the scenario's deadline (then the gap rule)."""
    env, s = product.s.env, product.s
    deadline = market.request.delivery_end + int(s.settlement.wait_for_meter_hours * 60)
    points = product.meter_points(market)
    start, end = product.meter_window(market)
    while not all(s.meter.covers(p, start, end) for p in points):
        if product.now >= deadline:
            market.note = "settled with missing meter data (gap rule)"
            return
        yield env.any_of([s.meter.updated, env.timeout(deadline - product.now)])
