"""Bidding strategies: flexibility forecast + market terms -> price/quantity offers.

Pure functions (no SimPy, no messages sent), so each can be checked by hand.

* ``cost``: the price of a shed kWh is what it costs the aggregator: the
  rebound energy bought back later at spot, minus the spot energy not bought
  during the event, plus the households' lost comfort; each further price
  step is ``step_markup`` dearer.
* ``risk_aware``: offers the forecast quantile of the flexibility (the kW it
  will have with probability 1 - quantile), keeps a margin unsold, and adds
  the expected penalty of non-delivery to the price.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from ..messages import BidRequest, Direction
from ..scenario import BiddingConfig

@dataclass(frozen=True)
class Offer:
    price: float  # DKK/kWh
    quantities_kw: tuple[float, ...]
    block: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # product-specific fields, sent as Bid.attrs


def unit_cost(cfg: BiddingConfig, direction: Direction, rebound_ratio: float,
              spot_during: float, spot_after: float) -> float:
    """DKK per kWh of flexibility, before markups; ``rebound_ratio`` = kWh drawn back per kWh shed."""
    if direction is Direction.DOWN:
        c = rebound_ratio * spot_after - spot_during + cfg.comfort_cost_dkk_per_kwh
    else:  # consume more now (at spot_during), draw less later
        c = spot_during - spot_after + cfg.comfort_cost_dkk_per_kwh
    return max(cfg.min_price_dkk_per_kwh, c)


def make_offers(cfg: BiddingConfig, req: BidRequest, *, free_kw: np.ndarray, rebound_ratio: float,
                spot_during: np.ndarray, spot_after: float) -> list[Offer]:
    hours = req.interval_minutes / 60.0
    qty = np.asarray(free_kw, dtype=float)
    if cfg.strategy == "risk_aware":
        z = NormalDist().inv_cdf(cfg.quantile)  # negative: a low quantile of the flexibility
        qty = qty * max(0.0, 1.0 + z * cfg.forecast_cv) * (1.0 - cfg.margin)
    else:
        qty = qty * cfg.offer_fraction
    c = unit_cost(cfg, req.direction, rebound_ratio, float(np.mean(spot_during)), spot_after)
    if cfg.strategy == "risk_aware" and req.penalty_price:
        c += cfg.quantile * cfg.forecast_cv * req.penalty_price  # expected penalty per kWh sold
    min_kw = float(req.params.get("min_bid_kw", 0.0) or 0.0)
    steps = cfg.steps
    if min_kw > 0:  # pool into fewer, larger steps so every slice reaches the minimum size
        steps = max(1, min(steps, int(qty.max() // min_kw)))
    per_step = np.round(qty / steps, 3)
    if min_kw > 0:
        per_step = np.where(per_step >= min_kw, per_step, 0.0)
    if not np.any(per_step > 0):
        return []
    option = req.params.get("dispatch") == "on_activation"
    window_h = hours * len(req.need_kw)
    offers = []
    for j in range(steps):
        price = round(float(c) * (1 + cfg.step_markup) ** j, 6)
        if price > req.price_cap:
            break
        extra: dict[str, Any] = {}
        if option:
            extra["availability_price"] = round(0.25 * price * window_h, 6)  # DKK/kW for holding it ready
        offers.append(Offer(price, tuple(per_step.tolist()), cfg.block_last_step and j == steps - 1 and j > 0, extra))
    return offers
