"""Table rows a product writes, built by column name (:func:`flech_sim.schema.row`).

One function per shared table, so a column added or moved in :mod:`flech_sim.schema`
cannot silently shift values; a product's own tables are written the same way
(``persistor.append(name, schema.row(name, ...))``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..clearing import ClearingOutcome
from ..messages import Award, Bid, ClearingResult, SettlementStatement
from ..persistor import Persistor
from ..schema import ROW_TYPES, TABLES, row
from .market import Market

__all__ = [
    "write_activation",
    "write_award",
    "write_award_series",
    "write_bid",
    "write_clearing",
    "write_market",
    "write_statement",
]


_BID_ROW = ROW_TYPES["bids"]
_new_tuple = tuple.__new__  # _new_tuple(_BID_ROW, (...)): the row built in C (its named tuple's __new__ is Python)
_BID_COLUMNS = (
    "bid_id",
    "msg_id",
    "market_id",
    "product_id",
    "seller",
    "interval",
    "interval_start",
    "quantity_kw",
    "price",
    "block",
    "baseline_kw",
    "submitted_at",
)
if TABLES["bids"].names != _BID_COLUMNS:  # write_bid, the hot one (a row per bid and interval), fills by position
    raise ImportError(f"flech_sim.products.records writes bids rows as {_BID_COLUMNS}; the schema has changed")


def write_bid(p: Persistor, market: Market, product_id: str, bid: Bid, now: int) -> None:
    req = market.request
    start, step = req.delivery_start, req.interval_minutes  # market.interval_start(i) = start + i * step
    baseline = bid.baseline_kw
    bid_id, msg_id, market_id, seller = bid.bid_id, bid.msg_id, bid.market_id, bid.sender
    price, block = float(bid.price), bool(bid.block)
    append = p.append
    for i, q in enumerate(bid.quantities_kw):
        # the columns of _BID_COLUMNS, in order (checked at import)
        append(
            "bids",
            _new_tuple(
                _BID_ROW,
                (
                    bid_id,
                    msg_id,
                    market_id,
                    product_id,
                    seller,
                    i,
                    start + i * step,
                    float(q),
                    price,
                    block,
                    baseline[i] if baseline else None,
                    now,
                ),
            ),
        )


def write_award(p: Persistor, market: Market, product_id: str, award: Award, payments: Sequence[float]) -> None:
    for i, (q, price) in enumerate(zip(award.accepted_kw, award.prices, strict=True)):
        p.append(
            "awards",
            row(
                "awards",
                msg_id=award.msg_id,
                bid_id=award.bid_id,
                market_id=market.market_id,
                product_id=product_id,
                seller=award.recipient,
                interval=i,
                interval_start=market.interval_start(i),
                accepted_kw=q,
                price=price,
                payment_dkk=payments[i],
            ),
        )


def write_activation(
    p: Persistor,
    market: Market,
    product_id: str,
    msg_id: str,
    activation_id: str,
    seller: str,
    bid_id: str,
    interval: int,
    kw: float,
) -> None:
    p.append(
        "activations",
        row(
            "activations",
            msg_id=msg_id,
            activation_id=activation_id,
            market_id=market.market_id,
            product_id=product_id,
            seller=seller,
            bid_id=bid_id,
            interval_start=market.interval_start(interval),
            quantity_kw=kw,
        ),
    )


def write_clearing(
    p: Persistor, market: Market, product_id: str, result: ClearingResult, outcome: ClearingOutcome, now: int
) -> None:
    req, h = market.request, market.hours
    accepted = result.accepted_kw
    p.append(
        "clearings",
        row(
            "clearings",
            market_id=market.market_id,
            product_id=product_id,
            msg_id=result.msg_id,
            status=str(outcome.status),
            method=str(outcome.method),
            objective_dkk=outcome.objective,
            cost_dkk=result.cost_dkk,
            mip_gap=outcome.mip_gap,
            n_bids=len(market.bids),
            n_accepted=result.n_accepted,
            need_kwh=sum(req.need_kw) * h,
            accepted_kwh=sum(accepted) * h,
            unmet_kwh=sum(outcome.unmet) * h,
            cleared_at=now,
            detail=outcome.message,
        ),
    )
    for i in range(req.n_intervals):
        p.append(
            "clearing_intervals",
            row(
                "clearing_intervals",
                market_id=market.market_id,
                product_id=product_id,
                interval=i,
                interval_start=market.interval_start(i),
                need_kw=float(req.need_kw[i]),
                accepted_kw=float(accepted[i]),
                unmet_kw=float(outcome.unmet[i]) if outcome.unmet else float(req.need_kw[i]),
                clearing_price=result.clearing_price[i] if result.clearing_price else None,
            ),
        )
    p.append(
        "solver_timings",
        row(
            "solver_timings",
            market_id=market.market_id,
            product_id=product_id,
            method=str(outcome.method),
            solve_time_s=outcome.solve_time_s,
        ),
    )


def write_statement(
    p: Persistor,
    market: Market,
    product_id: str,
    st: SettlementStatement,
    rule: str = "",
    imbalance_dkk: Sequence[float] = (),
) -> None:
    """One row per interval; ``rule`` the settlement rule applied, ``imbalance_dkk`` the part of
    ``penalty_dkk`` settled at the imbalance price (empty: none)."""
    for i, start in enumerate(st.interval_start):
        p.append(
            "settlements",
            row(
                "settlements",
                msg_id=st.msg_id,
                market_id=market.market_id,
                product_id=product_id,
                party=st.recipient,
                role=st.party_role,
                counterparty=st.counterparty,
                interval=i,
                interval_start=start,
                ordered_kwh=st.ordered_kwh[i],
                delivered_kwh=st.delivered_kwh[i],
                payment_dkk=st.payment_dkk[i],
                penalty_dkk=st.penalty_dkk[i],
                net_dkk=st.net_dkk[i],
                meter_gap=bool(st.meter_gap[i]) if st.meter_gap else False,
                rule=rule,
                imbalance_dkk=float(imbalance_dkk[i]) if imbalance_dkk else 0.0,
            ),
        )


def write_market(p: Persistor, market: Market, product_id: str) -> None:
    req = market.request
    p.append(
        "markets",
        row(
            "markets",
            market_id=market.market_id,
            product_id=product_id,
            buyer=req.sender,
            location=req.location,
            direction=str(req.direction),
            state=str(market.state),
            requested_at=market.requested_at,
            gate_close=req.gate_close,
            delivery_start=req.delivery_start,
            delivery_end=req.delivery_end,
            interval_minutes=req.interval_minutes,
            n_intervals=req.n_intervals,
            need_kwh=sum(req.need_kw) * market.hours,
            price_cap=req.price_cap,
            penalty_price=market.penalty_price,
            n_bids=market.n_bids,
            request_msg_id=req.msg_id,
            cleared_at=market.cleared_at,
            settled_at=market.settled_at,
            note=market.note,
        ),
    )


def write_award_series(p: Persistor, market: Market, product_id: str, table: str, attr: str) -> None:
    """A product's own per-interval award field (e.g. CRP's ``availability_dkk``, CL's ``cap_kw``) as rows
    of its own table: one per award and interval, keyed like the ``awards`` rows."""
    for a in market.awards:
        values: Sequence[float] = a.attrs.get(attr, ())  # type: ignore[assignment]  # declared per interval
        for i, v in enumerate(values):
            p.append(
                table,
                row(
                    table,
                    market_id=market.market_id,
                    product_id=product_id,
                    msg_id=a.msg_id,
                    bid_id=a.bid_id,
                    seller=a.recipient,
                    interval=i,
                    interval_start=market.interval_start(i),
                    **{attr: v},
                ),
            )
