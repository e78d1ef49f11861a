"""Aggregator (seller): forecasts its households' flexibility, bids it, never sells it twice, dispatches.

* Forecast: the world's physics run forward from the households' current
  state on *forecast* weather and base load (so forecast error is real),
  cached for ``forecast_refresh_hours`` while nothing new is committed. Once
  it has commitments (open bids, awards), every offer is sized on a forecast
  made *under* them: the households are stepped through the signed committed
  schedule, so consecutive activations see the buffers earlier ones drained,
  and the declared baseline carries the rebound of earlier activations.
* Bids: price steps from :mod:`flech_sim.agents.strategies` ('cost',
  'risk_aware' or 'expected_profit'; the last is fed its own measured delivery
  risk: relative shortfalls, and for products settled on the whole portfolio
  load -- CL, BL -- the baseline error in kW).
* Commitments: every kW offered is reserved per model step and feeder until
  the award says what was taken; offers are sized against what is still
  free, so overlapping markets can never both buy the same flexibility.
* Dispatch: an award (or activation) becomes a consumption change on the
  aggregator's households on that feeder; what they deliver follows from
  the physics, so non-delivery emerges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from ..endpoint import Connection
from ..footprint import declare_footprint
from ..messages import (
    Activation,
    Award,
    Bid,
    BidRequest,
    Direction,
    MarketCancellation,
    Rejection,
    RejectReason,
    SettlementStatement,
)
from ..scenario import AggregatorConfig, BiddingConfig
from ..schema import row
from ..world import REBOUND_GAP_STEPS, Portfolio, PortfolioForecast
from .base import Agent, Recorder
from .strategies import BASELINE_RISK, Offer, make_offers

FLEX_FORECASTS = "flex_forecasts"


@dataclass
class _OpenBid:
    request: BidRequest
    bid: Bid
    split: np.ndarray  # (aggregator's feeders, intervals): kW of this bid on each feeder


class Aggregator(Agent):
    def __init__(
        self,
        env: simpy.Environment,
        conn: Connection,
        cfg: AggregatorConfig,
        portfolio: Portfolio,
        spot_dkk_per_kwh: np.ndarray,
        recorder: Recorder,
    ) -> None:
        """``portfolio``: the handle on its own households; ``recorder``: its own tables
        (``flex_forecasts``, when it takes them, and ``agent_errors``), never the platform's."""
        super().__init__(env, conn, recorder)
        self.cfg = cfg
        self.portfolio = portfolio
        self.spot = spot_dkk_per_kwh
        self.feeders = list(portfolio.feeders)
        self._column = {f: i for i, f in enumerate(self.feeders)}
        self.dt = portfolio.dt
        # kW reserved by open bids and awards: direction -> (first model step, (feeders, steps) array)
        self._reserved: dict[str, tuple[int, np.ndarray]] = {}
        self._forecasts: dict[int, tuple[int, PortfolioForecast]] = {}  # by window length: (version, forecast)
        self._committed_fc: tuple[tuple[int, ...], PortfolioForecast] | None = None
        self._version = 0  # bumped whenever a reservation changes: forecasts made before are stale
        self._plan_made: tuple[tuple[int, ...], Any] = ((), None)  # (version, now, first, duration) -> _plan's answer
        self._open: dict[str, _OpenBid] = {}  # bid msg_id -> open bid
        self._by_bid_id: dict[str, str] = {}
        self._awarded: dict[str, _OpenBid] = {}  # bid_id -> awarded option, waiting for activations
        self.revenue_dkk = 0.0
        self.penalties_dkk = 0.0
        # Its own delivery record per product: (sum of squared relative shortfalls, intervals settled)
        self._shortfall: dict[str, tuple[float, int]] = {}
        # ... and of its baseline error where the product settles the whole load (CL, BL): per product
        # (sum of squared kW the load came out above the cap / the reduction went unrecognised, intervals)
        self._baseline_err: dict[str, tuple[float, int]] = {}
        self._terms: dict[str, tuple[float, float]] = {}  # market_id -> (penalty DKK/kWh, interval hours)
        self.rejections: list[Rejection] = []
        portfolio.share_commitments(self._plan)

    # -- forecasting ------------------------------------------------------------------------
    def _forecast(self, first_step: int, duration: int) -> PortfolioForecast:
        """A forecast covering windows of ``duration`` steps from ``first_step``.

        With commitments between now and the window's end, it is made under them, for this
        window only (reused while no reservation changes). Without, it is reused while younger
        than ``forecast_refresh_hours`` (and covering the window) and no reservation changed
        since, else made again, covering window starts up to that much further ahead."""
        now = self.now // self.dt
        key = (self._version, now, first_step, duration)
        if self._committed_fc is not None and self._committed_fc[0] == key:
            return self._committed_fc[1]
        plan = self._plan(first_step, duration)
        if plan is not None:
            fc = self.portfolio.forecast(first_step, duration, schedule=plan[0], awarded=plan[1])
            self._committed_fc = (key, fc)
            return fc
        refresh = max(1, int(self.cfg.forecast_refresh_hours * 60 // self.dt))
        cached = self._forecasts.get(duration)
        if cached is not None:
            version, fc = cached
            if (
                version == self._version
                and now - fc.start_step < refresh
                and fc.first_window <= first_step <= fc.last_window
            ):
                return fc
        fc = self.portfolio.forecast(first_step, duration, first_step + refresh)
        self._forecasts[duration] = (self._version, fc)
        return fc

    def _plan(self, first_step: int, duration: int) -> tuple[tuple[int, np.ndarray], tuple[int, np.ndarray]] | None:
        """(schedule, awarded) a forecast of the window is made under, from now (see Portfolio.forecast):
        None without commitments between now and the window's end (or right after it). Read-only, so the
        world may ask for it (share_commitments) when another aggregator asks about the same window."""
        now = self.now // self.dt
        key = (self._version, now, first_step, duration)
        if self._plan_made[0] == key:  # the world asks while sharing a roll-out, then this seller's own request
            return self._plan_made[1]
        # Commitments running on past the window are passed too: the world sizes the window's
        # flexibility so that they keep their energy.
        hi = max(first_step + duration, self._committed_until())
        schedule = self.committed_schedule(now, hi)
        plan = None
        if schedule[:, : first_step + duration - now + REBOUND_GAP_STEPS].any():
            awarded = self.committed_schedule(now, hi, awarded_only=True)
            schedule.setflags(write=False)  # handed out more than once: nobody may change it
            awarded.setflags(write=False)
            plan = (now, schedule), (now, awarded)
        self._plan_made = (key, plan)
        return plan

    def _committed_until(self) -> int:
        """The model step after the last one anything is reserved at."""
        end = 0
        for base, r in self._reserved.values():
            cols = np.flatnonzero(r.any(axis=0))
            if cols.size:
                end = max(end, base + int(cols[-1]) + 1)
        return end

    def committed_schedule(self, lo: int, hi: int, awarded_only: bool = False) -> np.ndarray:
        """(feeders, hi - lo) signed kW committed at model steps [lo, hi) (negative = shed):
        awards and open bids alike, the latter as if taken in full (the worst case for
        delivery), options as if fully activated; ``awarded_only``: awards alone."""
        out = np.zeros((len(self.feeders), max(hi - lo, 0)))
        if hi <= lo:
            return out
        for direction, sign in ((Direction.UP, 1.0), (Direction.DOWN, -1.0)):
            key = f"awarded-{direction}" if awarded_only else str(direction)
            if key in self._reserved:
                r, base = self._reservations(key, lo, hi)
                out += sign * r[:, lo - base : hi - base]
        return out

    def _steps(self, req: BidRequest) -> np.ndarray:
        """(n_intervals, k) model steps of each market interval."""
        n, m, dt = len(req.need_kw), req.interval_minutes, self.dt
        if req.delivery_start % dt == 0 and m % dt == 0:
            return req.delivery_start // dt + np.arange(n * (m // dt)).reshape(n, m // dt)
        rows = [
            np.arange((req.delivery_start + i * m) // dt, -(-(req.delivery_start + (i + 1) * m) // dt))
            for i in range(n)
        ]
        width = max(len(r) for r in rows)
        return np.array([np.pad(r, (0, width - len(r)), mode="edge") for r in rows])

    def _reservations(self, direction: str, lo: int, hi: int) -> tuple[np.ndarray, int]:
        """(array, offset): ``array[:, s - offset]`` is the kW reserved on each feeder at model
        step ``s``, for every s in [lo, hi). Steps already past are dropped whenever the array
        is re-made, so it spans the look-ahead, not the whole horizon (a year of 20 feeders
        would otherwise cost megabytes per aggregator)."""
        base, r = self._reserved.get(direction, (lo, np.zeros((len(self.feeders), 0))))
        if lo < base or hi > base + r.shape[1]:
            new_base = min(lo, self.now // self.dt)
            grown = np.zeros((len(self.feeders), 2 * (hi - new_base)))
            keep_lo, keep_hi = max(base, new_base), min(base + r.shape[1], new_base + grown.shape[1])
            if keep_hi > keep_lo:
                grown[:, keep_lo - new_base : keep_hi - new_base] = r[:, keep_lo - base : keep_hi - base]
            self._reserved[direction] = (new_base, grown)
            base, r = new_base, grown
        return r, base

    def committed_kw(self, feeder: str, direction: Direction, minute: int) -> float:
        """kW reserved by open bids and awards at a minute (for tests and analysis)."""
        step = minute // self.dt
        r, base = self._reservations(str(direction), step, step + 1)
        return float(r[self._column[feeder], step - base])

    # -- bidding ---------------------------------------------------------------------------
    def on_bid_request(self, req: BidRequest) -> None:
        if req.location == "*":
            mask = np.ones(len(self.feeders), dtype=bool)
        elif req.location in self._column:
            mask = np.arange(len(self.feeders)) == self._column[req.location]
        else:
            return
        steps = self._steps(req)
        first = int(steps.min())
        if first <= self.now // self.dt:
            return  # delivery already started: nothing to offer
        window = int(steps.max()) - first + 1
        fc = self._forecast(first, window)
        w = first - fc.first_window
        down = req.direction is Direction.DOWN
        n = len(req.need_kw)
        # (feeders, intervals): the flexibility holds through the whole window, so it is one
        # figure per feeder; feeders outside the market's location get none.
        flex = np.where(mask, (fc.flex_down_kw if down else fc.flex_up_kw)[w], 0.0)[:, None].repeat(n, axis=1)
        r, base = self._reservations(str(req.direction), first, int(steps.max()) + 1)
        held = r[:, steps - base].max(axis=2)
        free = np.maximum(flex - held, 0.0)
        base_f = fc.baseline_kw[steps - fc.start_step].mean(axis=1).T  # (feeders, intervals)
        baseline = base_f[mask].sum(axis=0)
        full_flex = float(flex[:, 0].sum())
        rebound = float(fc.rebound_down_kwh[w][mask].sum()) if down else 0.0
        total_free = free.sum(axis=0)
        if down:  # never offer to shed more than the portfolio is expected to draw
            total_free = np.minimum(total_free, np.maximum(baseline, 0.0))
        if req.product_id in BASELINE_RISK:
            self._terms[req.market_id] = (float(req.penalty_price or 0.0), req.interval_minutes / 60.0)
        offers = make_offers(
            self._bidding(req.product_id),
            req,
            baseline_sd_kw=self._baseline_sd(req.product_id, baseline),
            free_kw=total_free,
            rebound_ratio=rebound / (full_flex * window * self.dt / 60) if full_flex > 0 else 0.0,
            spot_during=self.spot[np.minimum(steps, len(self.spot) - 1)].mean(axis=1),
            spot_after=self.spot[np.minimum(steps.max() + 1 + np.arange(4), len(self.spot) - 1)].mean(),
        )
        share = np.divide(free, total_free, out=np.zeros_like(free), where=total_free > 0)
        declared = tuple(np.round(baseline, 3).tolist())
        offered = np.sum([o.quantities_kw for o in offers], axis=0) if offers else np.zeros(n)
        # kWh drawn back per kW shed on each feeder (full window): the footprint a pooled bid declares
        per_kw = np.divide(fc.rebound_down_kwh[w], flex[:, 0], out=np.zeros(len(flex)), where=flex[:, 0] > 0)
        for j, offer in enumerate(offers):
            self._send_bid(req, j, offer, declared, np.asarray(offer.quantities_kw) * share, per_kw if down else None)
        if FLEX_FORECASTS in self.recorder.tables:
            self._log_forecast(req, np.flatnonzero(mask), base_f, flex, held, offered * share)

    def _log_forecast(
        self,
        req: BidRequest,
        rows: np.ndarray,
        base_f: np.ndarray,
        flex: np.ndarray,
        held: np.ndarray,
        mine: np.ndarray,
    ) -> None:
        n = len(req.need_kw)
        starts = (req.delivery_start + req.interval_minutes * np.arange(n)).tolist()
        direction = str(req.direction)
        for r in rows.tolist():
            f = self.feeders[r]
            for i, t, b, x, h, o in zip(
                range(n), starts, base_f[r].tolist(), flex[r].tolist(), held[r].tolist(), mine[r].tolist(), strict=True
            ):
                self.recorder.append(
                    FLEX_FORECASTS,
                    row(
                        "flex_forecasts",
                        aggregator=self.id,
                        market_id=req.market_id,
                        product_id=req.product_id,
                        feeder=f,
                        interval=i,
                        interval_start=t,
                        direction=direction,
                        baseline_kw=b,
                        flex_kw=x,
                        committed_kw=h,
                        offered_kw=o,
                    ),
                )

    def _send_bid(
        self,
        req: BidRequest,
        j: int,
        offer: Offer,
        baseline: tuple[float, ...],
        split: np.ndarray,
        rebound_per_kw: np.ndarray | None = None,
    ) -> None:
        """A pooled bid (system-wide market) declares its footprint on the grid: its kW per feeder (the
        split it dispatches by) and the rebound they draw back, so coordination can keep feeders in limits."""
        attrs = dict(offer.extra)
        if req.location == "*":
            rebound = split.max(axis=1) * (rebound_per_kw if rebound_per_kw is not None else 0.0)
            attrs |= declare_footprint(self.feeders, split, rebound)
        bid = Bid(
            **self.envelope(req.market_id, req.product_id),
            bid_id=f"{self.id}-{req.market_id}-{j}",
            price=offer.price,
            quantities_kw=offer.quantities_kw,
            block=offer.block,
            baseline_kw=baseline,
            attrs=attrs,
        )
        ob = _OpenBid(req, bid, split)
        self._reserve(ob, split, +1)
        self._open[bid.msg_id] = ob
        self._by_bid_id[bid.bid_id] = bid.msg_id
        self.conn.send(bid)

    def _reserve(self, ob: _OpenBid, kw: np.ndarray, sign: int, awarded: bool = False) -> None:
        """Add (sign +1) or release (-1) ``kw`` (feeders, intervals) over the bid's model steps;
        ``awarded``: in the record of awards alone (what the declared baselines are made under)."""
        req = ob.request
        steps = self._steps(req)
        key = f"awarded-{req.direction}" if awarded else str(req.direction)
        r, base = self._reservations(key, int(steps.min()), int(steps.max()) + 1)
        self._version += 1
        steps = steps - base
        if req.delivery_start % self.dt == 0 and req.interval_minutes % self.dt == 0:
            s0, k = int(steps[0, 0]), steps.shape[1]  # whole steps, contiguous: a slice does it
            r[:, s0 : s0 + steps.size] += sign * np.repeat(kw, k, axis=1)
        else:  # intervals that share a model step both count there
            np.add.at(r, (slice(None), steps), sign * kw[:, :, None])  # type: ignore[arg-type]  # stubs reject (slice, array)

    def _settle_reservations(self) -> None:
        """Once no bid is open, what is reserved is, in exact arithmetic, what was awarded. The running
        sum (a bid's kW added, then what was not awarded taken back) can differ from the record of awards
        in the last bits of the kW it holds; the world then sees two plans and rolls the seller's homes
        out twice per market (once under each) for what is one plan. Where the two differ only so -- the
        same steps committed, values equal to 1e-12 relative -- the running sum takes the awards' values.
        Residue where nothing was awarded (a 1e-15 kW "commitment") is left as it is: it decides whether
        forecasts are made under commitments at all, and so outcomes."""
        if self._open:
            return
        for direction in (Direction.UP, Direction.DOWN):
            key = str(direction)
            if key not in self._reserved:
                continue
            base, r = self._reserved[key]
            a_base, a = self._reserved.get(f"awarded-{direction}", (base, np.zeros((r.shape[0], 0))))
            lo, hi = self.now // self.dt, max(base + r.shape[1], a_base + a.shape[1])
            if hi <= lo:
                continue
            mine, awarded = self._window(base, r, lo, hi), self._window(a_base, a, lo, hi)
            if np.array_equal(mine, awarded) or not np.array_equal(mine != 0, awarded != 0):
                continue
            if np.allclose(mine, awarded, rtol=1e-12, atol=0.0):
                self._reserved[key] = (a_base, a.copy())
                self._version += 1  # forecasts made under the old sum are stale

    @staticmethod
    def _window(base: int, r: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Steps [lo, hi) of a reservation array starting at step ``base`` (zero outside it)."""
        out = np.zeros((r.shape[0], hi - lo))
        s0, s1 = max(base, lo), min(base + r.shape[1], hi)
        if s1 > s0:
            out[:, s0 - lo : s1 - lo] = r[:, s0 - base : s1 - base]
        return out

    # -- outcomes ----------------------------------------------------------------------------
    def on_rejection(self, rej: Rejection) -> None:
        """A refused bid releases what it reserved. A ``duplicate`` never does: it says the ID is
        taken by an earlier message -- this bid itself, if a broker delivered it twice -- whose own
        answer (ack, then award) decides; releasing would drop an accepted bid and its dispatch."""
        self.rejections.append(rej)
        if rej.reason is RejectReason.DUPLICATE:
            return
        ob = self._open.pop(rej.ref_msg_id, None)
        if ob is not None:
            self._by_bid_id.pop(ob.bid.bid_id, None)
            self._reserve(ob, ob.split, -1)
            self._settle_reservations()

    def on_award(self, award: Award) -> None:
        ob = self._open.pop(self._by_bid_id.pop(award.bid_id, ""), None)
        if ob is None:
            return
        offered = np.asarray(ob.bid.quantities_kw)
        taken = np.divide(np.asarray(award.accepted_kw), offered, out=np.zeros_like(offered), where=offered > 0)
        accepted = ob.split * taken
        self._reserve(ob, ob.split - accepted, -1)
        ob.split = accepted
        if award.awarded:
            self._reserve(ob, accepted, +1, awarded=True)
        self._settle_reservations()
        if not award.awarded:
            return
        if ob.request.params.get("dispatch", "on_award") == "on_award":
            self._dispatch(ob, award.delivery_start, award.interval_minutes, accepted)
        else:  # an option: kept until the buyer activates it
            self._awarded[award.bid_id] = ob

    def _dispatch(self, ob: _OpenBid, start: int, minutes: int, kw: np.ndarray) -> None:
        sign = -1.0 if ob.request.direction is Direction.DOWN else 1.0
        self.portfolio.schedule(start, minutes, sign * kw)

    def on_activation(self, act: Activation) -> None:
        """Options (CRP) and regulating power called at short notice: dispatch what was called."""
        ob = next((o for o in self._awarded.values() if o.request.market_id == act.market_id), None)
        if ob is None:
            return
        per_feeder = ob.split.sum(axis=1)
        total = per_feeder.sum()
        mean_share = per_feeder / total if total > 0 else np.zeros_like(per_feeder)
        called = np.asarray(act.quantities_kw)
        self._dispatch(ob, act.start, act.interval_minutes, mean_share[:, None] * called[None, :])

    def on_market_cancellation(self, msg: MarketCancellation) -> None:
        for msg_id, ob in list(self._open.items()):
            if ob.request.market_id == msg.market_id:
                del self._open[msg_id]
                self._by_bid_id.pop(ob.bid.bid_id, None)
                self._reserve(ob, ob.split, -1)
                self._settle_reservations()

    def delivery_risk(self, product_id: str) -> float | None:
        """Root-mean-square relative shortfall of its settled intervals of a product (None before any)."""
        sq, n = self._shortfall.get(product_id, (0.0, 0))
        return float(np.sqrt(sq / n)) if n else None

    def baseline_sd_kw(self, product_id: str) -> float | None:
        """The baseline error its own settlements of a CL/BL-like product show, as a normal sd (kW):
        an excess over the cap (or an unrecognised reduction) is the positive half of the error, whose
        mean square is half the variance. None before any such settlement."""
        sq, n = self._baseline_err.get(product_id, (0.0, 0))
        return float(np.sqrt(2.0 * sq / n)) if n else None

    def _baseline_sd(self, product_id: str, baseline_kw: np.ndarray) -> np.ndarray | None:
        """Per interval, the sd of its portfolio load forecast that 'expected_profit' prices: the larger
        of ``baseline_cv`` x the forecast load and its measured record. None where the product's
        settlement does not measure the whole load (its baseline error is then not its risk)."""
        cfg = self.cfg.bidding
        if cfg.strategy != "expected_profit" or product_id not in BASELINE_RISK:
            return None
        prior = cfg.baseline_cv * np.abs(np.asarray(baseline_kw, dtype=float))
        return np.maximum(prior, self.baseline_sd_kw(product_id) or 0.0)

    def _bidding(self, product_id: str) -> BiddingConfig:
        """'expected_profit' prices the risk it has measured: the relative sd of its deliverable
        flexibility is the larger of the configured one and its own record of shortfalls."""
        cfg = self.cfg.bidding
        risk = self.delivery_risk(product_id)
        if cfg.strategy != "expected_profit" or risk is None or risk <= cfg.forecast_cv:
            return cfg
        return cfg.model_copy(update={"forecast_cv": min(risk, 10.0)})

    def on_settlement(self, st: SettlementStatement) -> None:
        self.revenue_dkk += sum(st.payment_dkk)
        self.penalties_dkk += sum(st.penalty_dkk)
        ordered, delivered = np.asarray(st.ordered_kwh, dtype=float), np.asarray(st.delivered_kwh, dtype=float)
        ok = ordered > 0
        terms = self._terms.pop(st.market_id, None)
        if st.party_role == "seller" and ok.any() and st.product_id in BASELINE_RISK:
            # Shortfalls here are the baseline's error, in kW, not a fraction of the flexibility: CL
            # penalises the load's whole excess over the cap (penalty / price), BL the unrecognised kW.
            pen, h = terms if terms is not None else (0.0, 1.0)
            if BASELINE_RISK[st.product_id] == "cap" and pen > 0:
                err = np.asarray(st.penalty_dkk, dtype=float)[ok] / (pen * h)
            else:
                err = (ordered[ok] - delivered[ok]) / h
            sq, n = self._baseline_err.get(st.product_id, (0.0, 0))
            self._baseline_err[st.product_id] = (sq + float(np.sum(err**2)), n + int(ok.sum()))
        elif st.party_role == "seller" and ok.any():
            rel = (ordered[ok] - delivered[ok]) / ordered[ok]
            sq, n = self._shortfall.get(st.product_id, (0.0, 0))
            self._shortfall[st.product_id] = (sq + float(np.sum(rel**2)), n + int(ok.sum()))
        # A settled market activates nothing more: forget its options (a year of them adds up).
        for bid_id in [b for b, o in self._awarded.items() if o.request.market_id == st.market_id]:
            del self._awarded[bid_id]
