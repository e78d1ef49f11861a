"""Helpers for the product tests (tests/test_products_*.py): a core with every built-in product.

Use in a test module (overrides conftest's fixture, so ``harness`` has every product)::

    @pytest.fixture
    def make_scenario():
        return all_products_scenario
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq
import pytest

from flech_sim.messages import (
    Activation,
    Award,
    Bid,
    ClearingResult,
    Message,
    MeterData,
    Rejection,
    SettlementStatement,
)
from flech_sim.scenario import Scenario, scenario_from_dict
from tests.conftest import Harness, scenario_dict

ALL_PRODUCTS = {"SRP": "builtin", "CRP": "builtin", "CL": "builtin", "BL": "builtin", "mFRR": "builtin"}


def all_products_scenario(**kw: Any) -> Scenario:
    return scenario_from_dict(scenario_dict(**{"products": ALL_PRODUCTS, **kw}))


def bid(
    h: Harness,
    seller: str,
    bid_id: str,
    price: float,
    qty: tuple[float, ...],
    *,
    product: str,
    market_id: str = "m1",
    block: bool = False,
    baseline: tuple[float, ...] | None = None,
    availability_price: float | None = None,
    **extra: Any,
) -> Bid:
    """A bid; the declared baseline defaults to 5000 kW per interval (give () for none); ``availability_price``
    (CRP) goes into ``attrs``."""
    p = h.people[seller]
    attrs = dict(extra.pop("attrs", {}))
    if availability_price is not None:
        attrs["availability_price"] = availability_price
    return Bid(
        **p.env_fields(market_id, product, int(h.env.now)),
        bid_id=bid_id,
        price=price,
        quantities_kw=qty,
        block=block,
        baseline_kw=baseline if baseline is not None else tuple(5000.0 for _ in qty),
        attrs=attrs,
        **extra,
    )


def activation(
    h: Harness,
    who: str,
    activation_id: str,
    start: int,
    qty: tuple[float, ...],
    *,
    seller: str = "",
    product: str = "CRP",
    market_id: str = "m1",
    interval_minutes: int = 60,
) -> Activation:
    p = h.people[who]
    return Activation(
        **p.env_fields(market_id, product, int(h.env.now)),
        activation_id=activation_id,
        start=start,
        interval_minutes=interval_minutes,
        quantities_kw=qty,
        seller=seller,
    )


def meter(h: Harness, point: str, start: int, values: list[float | None], step: int = 15) -> MeterData:
    return MeterData(
        **h.people["datahub"].env_fields("", "METER", int(h.env.now)),
        metering_point=point,
        start=start,
        interval_minutes=step,
        consumption_kw=tuple(values),
    )


def received(h: Harness, who: str, cls: type[Message]) -> list[Any]:
    return [m for m in h.people[who].inbox if isinstance(m, cls)]


def awards(h: Harness) -> dict[str, Award]:
    return {m.bid_id: m for p in ("agg-a", "agg-b", "agg-c") for m in received(h, p, Award)}


def result(h: Harness, buyer: str = "dso-1") -> ClearingResult:
    (res,) = received(h, buyer, ClearingResult)
    return res


def statements(h: Harness) -> dict[str, SettlementStatement]:
    out = {}
    for who in h.people:
        for st in received(h, who, SettlementStatement):
            assert who not in out, f"{who} got two statements"
            out[who] = st
    return out


def rejections(h: Harness, who: str) -> list[Rejection]:
    return received(h, who, Rejection)


def table(h: Harness, name: str) -> list[dict[str, Any]]:
    """Rows of an output table (closes the persistor: call at the end of a test)."""
    h.persistor.close()
    return pq.read_table(h.persistor.out_dir / f"{name}.parquet").to_pylist()


def assert_conserved(sts: dict[str, SettlementStatement], buyer: str = "dso-1") -> None:
    """Per interval, the buyer's net is minus the sum of the sellers' nets."""
    b = sts[buyer]
    sellers = [s for w, s in sts.items() if w != buyer]
    assert b.party_role == "buyer" and all(s.party_role == "seller" for s in sellers)
    for i in range(len(b.net_dkk)):
        assert b.net_dkk[i] == pytest.approx(-sum(s.net_dkk[i] for s in sellers), abs=1e-9)
