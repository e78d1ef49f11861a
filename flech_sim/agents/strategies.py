"""Bidding strategies: flexibility forecast + market terms -> price/quantity offers.

Pure functions (no SimPy, no messages sent), so each can be checked by hand.

* ``cost``: the price of a shed kWh is what it costs the aggregator: the
  rebound energy bought back later at spot, minus the spot energy not bought
  during the event, plus the households' lost comfort; each further price
  step is ``step_markup`` dearer.
* ``risk_aware``: offers the forecast quantile of the flexibility (the kW it
  will have with probability 1 - quantile), keeps a margin unsold, and adds
  the expected penalty of non-delivery to the price.
* ``expected_profit``: newsvendor. The deliverable flexibility is uncertain
  (normal, relative sd ``forecast_cv`` around the forecast); selling a kWh that
  is delivered earns the margin (price - cost), selling one that is not costs
  the shortfall loss of the market's settlement rule (:func:`shortfall_loss`).
  Each price step sells up to the quantity q with
  P(flex < q) = margin / (margin + loss): the dearer a shortfall, the less
  offered; a riskless forecast offers all of it. Where the product settles the
  seller's *whole portfolio load* (:data:`BASELINE_RISK`: CL's cap, BL's platform
  baseline), the portfolio's baseline uncertainty (sd in kW, not a fraction of the
  flexibility) costs a sum per awarded interval that does not shrink with the award
  (:func:`baseline_risk_dkk_per_h`): the offer then becomes an all-or-nothing block no
  larger than the buyer's need, keeping only the intervals whose expected profit is
  positive -- a small slice behind a cheaper competitor would earn less than the noise costs.
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


def _option_attrs(option: bool, price: float, window_h: float) -> dict[str, Any]:
    """An option's availability price (DKK/kW for holding it ready over the window), sent as Bid.attrs."""
    return {"availability_price": round(0.25 * price * window_h, 6)} if option else {}


def unit_cost(
    cfg: BiddingConfig, direction: Direction, rebound_ratio: float, spot_during: float, spot_after: float
) -> float:
    """DKK per kWh of flexibility, before markups; ``rebound_ratio`` = kWh drawn back per kWh shed."""
    if direction is Direction.DOWN:
        c = rebound_ratio * spot_after - spot_during + cfg.comfort_cost_dkk_per_kwh
    else:  # consume more now (at spot_during), draw less later
        c = spot_during - spot_after + cfg.comfort_cost_dkk_per_kwh
    return max(cfg.min_price_dkk_per_kwh, c)


def newsvendor_kw(free_kw: np.ndarray, cv: float, margin: float, loss: float) -> np.ndarray:
    """The quantity q maximising expected profit when the deliverable kW are normal with mean
    ``free_kw`` and sd ``cv * free_kw``: P(flex < q) = margin / (margin + loss), never above the
    forecast (the physics bound it was sized on) and never below zero."""
    free = np.maximum(np.asarray(free_kw, dtype=float), 0.0)
    if margin <= 0:
        return np.zeros_like(free)
    if loss <= 0 or cv <= 0:
        return free
    ratio = margin / (margin + loss)
    z = NormalDist().inv_cdf(min(max(ratio, 1e-9), 1 - 1e-9))
    return free * min(1.0, max(0.0, 1.0 + z * cv))


def shortfall_loss(rule: str, price: float, penalty: float, imbalance_premium: float = 0.0) -> float:
    """DKK a seller loses per kWh it sells at ``price`` and does not deliver, under the settlement rule
    the bid request names (``params["settlement"]``; see :mod:`flech_sim.settlement`):

    * delivered_plus_penalty (or none named): the penalty (the kWh is simply not paid);
    * award_minus_penalty: the penalty less the price, which the award pays anyway;
    * imbalance: the expected imbalance premium over spot (``params["imbalance_premium"]``), plus
      any penalty the market names -- not a multiple of the price cap.
    """
    if rule == "award_minus_penalty":
        return penalty - price
    if rule == "imbalance":
        return imbalance_premium + penalty
    return penalty


BASELINE_RISK: dict[str, str] = {"CL": "cap", "BL": "platform_baseline"}
"""Products whose settlement measures the seller's whole portfolio load, so that its baseline error is
settled as if it were its own delivery: 'cap' (CL: metered load above the cap is penalised, whatever the
reduction) and 'platform_baseline' (BL: delivered = the platform's meter-data baseline - metered load)."""


def _normal_loss(z: float) -> float:
    """E[max(0, Z - z)] for a standard normal Z."""
    nd = NormalDist()
    return nd.pdf(z) - z * (1.0 - nd.cdf(z))


def baseline_risk_dkk_per_h(
    kind: str,
    reduction_kw: float,
    sd_kw: float,
    price: float,
    penalty: float,
    *,
    rule: str = "delivered_plus_penalty",
    imbalance_premium: float = 0.0,
) -> float:
    """Expected DKK per hour an awarded ``reduction_kw`` loses to the portfolio's baseline error
    (normal, unbiased, sd ``sd_kw`` kW), under the product's verification ``kind``:

    * 'cap' (CL): the load's excess over the cap is penalised in full: penalty x E[max(0, error)]
      = penalty x sd x phi(0), the same for 1 kW as for 100 (nothing where no reduction is awarded:
      the cap binds only there);
    * 'platform_baseline' (BL): a baseline that comes out low hides up to the whole reduction:
      E[min(R, max(0, error))] = sd x (L(0) - L(R / sd)) kWh per hour are shed (the cost borne) yet not
      recognised, each losing the penalty plus, where only delivered energy is paid, its price.
    """
    if reduction_kw <= 0 or sd_kw <= 0:
        return 0.0
    if kind == "cap":
        return penalty * sd_kw * _normal_loss(0.0)
    if kind == "platform_baseline":
        hidden = sd_kw * (_normal_loss(0.0) - _normal_loss(reduction_kw / sd_kw))
        unpaid = 0.0 if rule == "award_minus_penalty" else price
        premium = imbalance_premium if rule == "imbalance" else 0.0
        return hidden * (penalty + unpaid + premium)
    return 0.0


def expected_profit_offers(
    cfg: BiddingConfig,
    free_kw: np.ndarray,
    cost: float,
    penalty: float,
    price_cap: float,
    *,
    rule: str = "delivered_plus_penalty",
    imbalance_premium: float = 0.0,
    baseline_kind: str = "",
    baseline_sd_kw: np.ndarray | None = None,
    need_kw: np.ndarray | None = None,
) -> list[tuple[float, np.ndarray]]:
    """(price, kW of this step) per price step: step j asks ``cost * (1 + step_markup) ** (j + 1)``
    (never below the price floor) and brings the cumulative offer to its newsvendor quantity, with the
    shortfall priced by :func:`shortfall_loss` under ``rule``.

    With a ``baseline_kind`` (see :data:`BASELINE_RISK`) and a baseline sd per interval, each step is
    meant as an all-or-nothing block: the cumulative offer is capped at ``need_kw`` and a step keeps only
    the intervals where its own quantity earns more than :func:`baseline_risk_dkk_per_h` costs (each step
    pays the risk in full on its own, so any set of accepted steps is profitable; a step with no such
    interval is not offered, and its quantity is left to the next, dearer step)."""
    out: list[tuple[float, np.ndarray]] = []
    sold = np.zeros_like(np.asarray(free_kw, dtype=float))
    floor = max(cost, cfg.min_price_dkk_per_kwh)
    sd = None if not baseline_kind or baseline_sd_kw is None else np.asarray(baseline_sd_kw, dtype=float)
    for j in range(cfg.steps):
        price = round(floor * (1 + cfg.step_markup) ** (j + 1), 6)
        if price > price_cap:
            break
        loss = shortfall_loss(rule, price, penalty, imbalance_premium)
        q = newsvendor_kw(free_kw, cfg.forecast_cv, price - cost, loss)
        if sd is not None and need_kw is not None:
            q = np.minimum(q, np.asarray(need_kw, dtype=float))
        step = np.round(np.maximum(q - sold, 0.0), 3)
        if sd is not None:
            risk = np.array(
                [
                    baseline_risk_dkk_per_h(
                        baseline_kind,
                        float(k),
                        float(s),
                        price,
                        penalty,
                        rule=rule,
                        imbalance_premium=imbalance_premium,
                    )
                    for k, s in zip(step, sd, strict=True)
                ]
            )
            step = np.where(step * (price - cost) > risk, step, 0.0)
        sold = sold + step
        out.append((price, step))
    return out


def make_offers(
    cfg: BiddingConfig,
    req: BidRequest,
    *,
    free_kw: np.ndarray,
    rebound_ratio: float,
    spot_during: np.ndarray,
    spot_after: float,
    baseline_sd_kw: np.ndarray | None = None,
) -> list[Offer]:
    """Price steps for one bid request; ``baseline_sd_kw``: the portfolio's baseline uncertainty per
    interval (kW), which 'expected_profit' prices where the product settles the whole load."""
    if req.product_id in cfg.min_price_by_product:  # this product's own price floor
        cfg = cfg.model_copy(update={"min_price_dkk_per_kwh": cfg.min_price_by_product[req.product_id]})
    hours = req.interval_minutes / 60.0
    qty = np.asarray(free_kw, dtype=float)
    if cfg.strategy == "expected_profit":
        return _expected_profit(
            cfg,
            req,
            qty,
            unit_cost(cfg, req.direction, rebound_ratio, float(np.mean(spot_during)), spot_after),
            baseline_sd_kw,
        )
    if cfg.strategy == "risk_aware":
        z = NormalDist().inv_cdf(cfg.quantile)  # negative: a low quantile of the flexibility
        qty = qty * max(0.0, 1.0 + z * cfg.forecast_cv) * (1.0 - cfg.margin)
    else:
        qty = qty * cfg.offer_fraction
    c = unit_cost(cfg, req.direction, rebound_ratio, float(np.mean(spot_during)), spot_after)
    if cfg.strategy == "risk_aware":  # expected shortfall loss per kWh sold, under the market's settlement rule
        rule = str(req.params.get("settlement", "delivered_plus_penalty"))
        premium = float(req.params.get("imbalance_premium", 0.0) or 0.0)
        loss = shortfall_loss(rule, float(c), float(req.penalty_price or 0.0), premium)
        c += cfg.quantile * cfg.forecast_cv * max(0.0, loss)
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
        offers.append(
            Offer(
                price,
                tuple(per_step.tolist()),
                cfg.block_last_step and j == steps - 1 and j > 0,
                _option_attrs(option, price, window_h),
            )
        )
    return offers


def _expected_profit(
    cfg: BiddingConfig, req: BidRequest, free_kw: np.ndarray, cost: float, baseline_sd_kw: np.ndarray | None = None
) -> list[Offer]:
    """Offers of the ``expected_profit`` strategy; a slice below the product's minimum bid size is
    dropped (pooling steps would change their prices). Under a product of :data:`BASELINE_RISK` with a
    known baseline sd, every offer is a block (a partial award would pay the risk on too few kW)."""
    penalty = float(req.penalty_price or 0.0)
    rule = str(req.params.get("settlement", "delivered_plus_penalty"))
    premium = float(req.params.get("imbalance_premium", 0.0) or 0.0)
    min_kw = float(req.params.get("min_bid_kw", 0.0) or 0.0)
    option = req.params.get("dispatch") == "on_activation"
    window_h = req.interval_minutes / 60.0 * len(req.need_kw)
    if min_kw > 0:  # one step carrying the whole newsvendor quantity reaches the minimum most often
        cfg = cfg.model_copy(update={"steps": 1})
    risky = baseline_sd_kw is not None and bool(np.any(np.asarray(baseline_sd_kw) > 0))
    kind = BASELINE_RISK.get(req.product_id, "") if risky else ""
    offers = []
    steps = expected_profit_offers(
        cfg,
        free_kw,
        cost,
        penalty,
        req.price_cap,
        rule=rule,
        imbalance_premium=premium,
        baseline_kind=kind,
        baseline_sd_kw=baseline_sd_kw,
        need_kw=np.asarray(req.need_kw, dtype=float),
    )
    for j, (price, kw) in enumerate(steps):
        kw = np.where(kw >= min_kw, kw, 0.0) if min_kw > 0 else kw
        if not np.any(kw > 0):
            continue
        offers.append(
            Offer(
                price,
                tuple(kw.tolist()),
                bool(kind) or (cfg.block_last_step and j == len(steps) - 1 and j > 0),
                _option_attrs(option, price, window_h),
            )
        )
    return offers
