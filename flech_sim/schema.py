"""Output tables: every column defined once, with its type, unit and meaning.

The persistor writes Parquet with these schemas and the documentation
(``flech-sim tables``, README) is generated from them, so the two cannot
drift apart (PyPSA's "schema as data").

Time columns (type ``time``) are given to the persistor as whole simulated
minutes and written as timestamps (scenario start + minutes).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "time": pa.timestamp("s"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # key of ARROW_TYPES
    unit: str
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    deterministic: bool = True  # False: wall-clock figures, excluded from run comparisons

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in self.columns])


def _c(name: str, type_: str, unit: str, doc: str, nullable: bool = False) -> Column:
    return Column(name, type_, unit, doc, nullable)


_MARKET = _c("market_id", "str", "-", "market the row belongs to")
_PRODUCT = _c("product_id", "str", "-", "product ID (SRP, CRP, CL, BL, mFRR, ...)")
_MSG = _c("msg_id", "str", "-", "ID of the message this row came from (join with messages.msg_id)")
_IDX = _c("interval", "int", "-", "interval index within the delivery window, from 0")
_ISTART = _c("interval_start", "time", "timestamp", "start of the interval")

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "messages",
            "Every message that crossed the communication endpoint, in either direction, "
            "rejected and malformed ones included.",
            (
                _c("seq", "int", "-", "order in which the endpoint saw the message"),
                _c("msg_id", "str", "-", "message ID (unique per run; malformed input gets an endpoint ID)"),
                _c("kind", "str", "-", "message kind (bid, award, rejection, ..., or 'malformed')"),
                _c("topic", "str", "-", "MQTT-style topic flech/<product>/<market>/<kind>"),
                _c("direction", "str", "-", "'in' (participant to platform) or 'out' (platform to participant)"),
                _c("sender", "str", "-", "participant ID of the sender"),
                _c("recipient", "str", "-", "participant ID of the recipient"),
                _c("authenticated_as", "str", "-", "identity of the connection the message came through"),
                _MARKET,
                _PRODUCT,
                _c("sent_at", "time", "timestamp", "simulated send time"),
                _c("ref_msg_id", "str", "-", "message answered (acks, rejections)", nullable=True),
                _c(
                    "verdict",
                    "str",
                    "-",
                    "for 'in' messages: accepted, rejected or redelivery (the same message "
                    "again, answered as the first time); 'sent' for 'out'",
                ),
                _c("payload", "str", "JSON", "the whole message as JSON (raw text if malformed)"),
            ),
        ),
        Table(
            "rejections",
            "Every rejection, with its reason code; ref_msg_id points at the refused message.",
            (
                _MSG,
                _c("ref_msg_id", "str", "-", "the refused message"),
                _c("ref_kind", "str", "-", "kind of the refused message"),
                _c("participant", "str", "-", "who sent the refused message"),
                _MARKET,
                _PRODUCT,
                _c("reason", "str", "-", "reason code (RejectReason)"),
                _c("detail", "str", "-", "human-readable explanation"),
                _c("at", "time", "timestamp", "simulated time of the rejection"),
            ),
        ),
        Table(
            "markets",
            "One row per market requested, with its terms and life-cycle state at the end of the run.",
            (
                _MARKET,
                _PRODUCT,
                _c("buyer", "str", "-", "participant that opened the market"),
                _c("location", "str", "-", "feeder or area the flexibility must come from"),
                _c("direction", "str", "-", "down (consume less) or up (consume more)"),
                _c(
                    "state",
                    "str",
                    "-",
                    "final life-cycle state: open, gate_closed, cleared, delivered, settled, cancelled, failed",
                ),
                _c("requested_at", "time", "timestamp", "when the market request arrived"),
                _c("gate_close", "time", "timestamp", "bids accepted strictly before this time"),
                _c("delivery_start", "time", "timestamp", "start of the delivery window"),
                _c("delivery_end", "time", "timestamp", "end of the delivery window"),
                _c("interval_minutes", "int", "min", "length of one interval"),
                _c("n_intervals", "int", "-", "intervals in the delivery window"),
                _c("need_kwh", "float", "kWh", "requested energy over the window"),
                _c("price_cap", "float", "DKK/kWh", "buyer's cap; unmet need is valued at it"),
                _c("penalty_price", "float", "DKK/kWh", "penalty per kWh of shortfall"),
                _c("n_bids", "int", "-", "bids acknowledged"),
                _c("request_msg_id", "str", "-", "the market request message"),
                _c("cleared_at", "time", "timestamp", "when clearing finished", nullable=True),
                _c("settled_at", "time", "timestamp", "when settlement was issued", nullable=True),
                _c("note", "str", "-", "why a market was cancelled or failed"),
            ),
        ),
        Table(
            "bids",
            "Every acknowledged bid, one row per bid and interval.",
            (
                _c("bid_id", "str", "-", "bid ID (unique within its market)"),
                _MSG,
                _MARKET,
                _PRODUCT,
                _c("seller", "str", "-", "bidding participant"),
                _IDX,
                _ISTART,
                _c("quantity_kw", "float", "kW", "offered flexibility in the interval"),
                _c("price", "float", "DKK/kWh", "energy price of the bid"),
                _c("block", "bool", "-", "all-or-nothing over all intervals"),
                _c("baseline_kw", "float", "kW", "seller's declared baseline for the interval", nullable=True),
                _c("submitted_at", "time", "timestamp", "arrival time at the platform"),
            ),
        ),
        Table(
            "clearings",
            "One row per clearing (market), with the solver's verdict.",
            (
                _MARKET,
                _PRODUCT,
                _c("msg_id", "str", "-", "the clearing result message sent to the buyer"),
                _c("status", "str", "-", "optimal, feasible, empty, infeasible or error"),
                _c("method", "str", "-", "clearing path used: merit, highs or pyomo"),
                _c("objective_dkk", "float", "DKK", "objective at true prices, including unmet need at the cap"),
                _c("cost_dkk", "float", "DKK", "pay-as-bid (or pay-as-clear) cost of the accepted bids"),
                _c("mip_gap", "float", "-", "relative MIP gap reached (null for LP / merit order)", nullable=True),
                _c("n_bids", "int", "-", "bids in the book"),
                _c("n_accepted", "int", "-", "bids with any accepted quantity"),
                _c("need_kwh", "float", "kWh", "requested energy"),
                _c("accepted_kwh", "float", "kWh", "accepted energy"),
                _c("unmet_kwh", "float", "kWh", "need left unmet"),
                _c("cleared_at", "time", "timestamp", "simulated time of clearing"),
                _c("detail", "str", "-", "solver message or infeasibility reason"),
            ),
        ),
        Table(
            "clearing_intervals",
            "Per market and interval: need, accepted, unmet and the clearing price.",
            (
                _MARKET,
                _PRODUCT,
                _IDX,
                _ISTART,
                _c("need_kw", "float", "kW", "requested"),
                _c("accepted_kw", "float", "kW", "accepted from bids"),
                _c("unmet_kw", "float", "kW", "not covered"),
                _c(
                    "clearing_price",
                    "float",
                    "DKK/kWh",
                    "highest accepted bid price; pay-as-clear: the uniform price paid (null if none)",
                    nullable=True,
                ),
            ),
        ),
        Table(
            "solver_timings",
            "Wall-clock solve times: not deterministic, so kept apart from the outcome tables.",
            (
                _MARKET,
                _PRODUCT,
                _c("method", "str", "-", "clearing path used"),
                _c("solve_time_s", "float", "s", "wall-clock time of the clearing call"),
            ),
            deterministic=False,
        ),
        Table(
            "awards",
            "What was accepted of every bid, one row per bid and interval (zeros for non-awards).",
            (
                _MSG,
                _c("bid_id", "str", "-", "the bid"),
                _MARKET,
                _PRODUCT,
                _c("seller", "str", "-", "bidder"),
                _IDX,
                _ISTART,
                _c("accepted_kw", "float", "kW", "accepted flexibility"),
                _c("price", "float", "DKK/kWh", "price paid for the accepted energy (CRP: the activation price)"),
                _c(
                    "payment_dkk",
                    "float",
                    "DKK",
                    "what the award pays for the interval, by the product's pricing "
                    "rule: accepted energy x price; for options (CRP) the availability payment (activated energy is "
                    "paid in settlement). Product-specific award fields are in the product's own tables",
                ),
            ),
        ),
        Table(
            "activations",
            "Activations of options and regulating power, one row per activation and interval.",
            (
                _MSG,
                _c("activation_id", "str", "-", "activation ID"),
                _MARKET,
                _PRODUCT,
                _c("seller", "str", "-", "activated seller"),
                _c("bid_id", "str", "-", "awarded bid the activation is drawn from (cheapest activation price first)"),
                _ISTART,
                _c("quantity_kw", "float", "kW", "activated flexibility"),
            ),
        ),
        Table(
            "baselines",
            "Platform-computed baselines (BL), one row per market, seller and interval: which method was asked "
            "for, which produced the value (a fallback when history was insufficient) and the value.",
            (
                _MARKET,
                _PRODUCT,
                _c("seller", "str", "-", "settled seller"),
                _c("metering_point", "str", "-", "<seller>@<location> the baseline is computed from"),
                _IDX,
                _ISTART,
                _c("method", "str", "-", "method the market asked for: x_of_y, rolling_average, meter_before_after"),
                _c(
                    "used",
                    "str",
                    "-",
                    "what produced the value: the method, the fallback method, 'declared' "
                    "(seller's declared baseline) or 'none' (no baseline: nothing counted as delivered)",
                ),
                _c("fallback", "bool", "-", "the requested method had insufficient meter history"),
                _c("baseline_kw", "float", "kW", "baseline used in settlement (null = none)", nullable=True),
                _c("detail", "str", "-", "why the fallback was used, or what the method averaged"),
            ),
        ),
        Table(
            "meter_data",
            "Meter readings as published by the data provider.",
            (
                _MSG,
                _c("metering_point", "str", "-", "<seller>@<location>"),
                _ISTART,
                _c("interval_minutes", "int", "min", "resolution"),
                _c("consumption_kw", "float", "kW", "metered average power (null = gap)", nullable=True),
                _c("published_at", "time", "timestamp", "when the data provider sent it"),
            ),
        ),
        Table(
            "settlements",
            "Settlement statements, one row per market, party and interval. Money is conserved: "
            "the buyer's net equals minus the sum of its sellers' nets.",
            (
                _MSG,
                _MARKET,
                _PRODUCT,
                _c("party", "str", "-", "participant the statement is for"),
                _c("role", "str", "-", "buyer or seller"),
                _c("counterparty", "str", "-", "the other side"),
                _IDX,
                _ISTART,
                _c("ordered_kwh", "float", "kWh", "awarded energy"),
                _c("delivered_kwh", "float", "kWh", "verified delivered energy (capped at the award)"),
                _c("payment_dkk", "float", "DKK", "payment for the award (seller receives, buyer pays)"),
                _c(
                    "penalty_dkk",
                    "float",
                    "DKK",
                    "what the seller pays for not delivering (buyer receives): shortfall penalty + imbalance_dkk",
                ),
                _c("net_dkk", "float", "DKK", "money in for this party (negative = pays)"),
                _c("meter_gap", "bool", "-", "the interval had missing meter data (settled by the gap rule)"),
                _c(
                    "rule",
                    "str",
                    "-",
                    "settlement rule: delivered_plus_penalty, award_minus_penalty, imbalance ('' = the product's own)",
                ),
                _c(
                    "imbalance_dkk",
                    "float",
                    "DKK",
                    "of penalty_dkk, the deviation settled at the imbalance spread over spot (the TSO is the "
                    "counterparty; negative = the seller receives)",
                ),
            ),
        ),
        Table(
            "portfolio_load",
            "Simulated (true) net load per portfolio (one aggregator's households on one feeder) and model step.",
            (
                _c("metering_point", "str", "-", "<aggregator>@<feeder> ('unaggregated@<feeder>' for the rest)"),
                _c("location", "str", "-", "feeder"),
                _ISTART,
                _c("load_kw", "float", "kW", "true average net power (consumption - PV)"),
                _c(
                    "reduction_kw",
                    "float",
                    "kW",
                    "load shed by dispatch against the households' own plan (negative = added)",
                ),
            ),
        ),
        Table(
            "feeder_load",
            "Simulated load per feeder and model step, with the feeder's limit.",
            (
                _c("feeder", "str", "-", "feeder ID"),
                _ISTART,
                _c("load_kw", "float", "kW", "sum of the net load of every household on the feeder"),
                _c("limit_kw", "float", "kW", "the feeder's limit (congestion above it)"),
            ),
        ),
        Table(
            "household_temperatures",
            "Indoor temperature of a sample of heated households, in two strata: aggregated homes (eligible "
            "for dispatch) and unaggregated ones (never dispatched). Per owner, households.record_households "
            "homes at random; each aggregator adds the first as many of its homes to be dispatched, from the "
            "start of the day of their first dispatch.",
            (
                _c("household", "int", "-", "household index (join with households.household)"),
                _c("metering_point", "str", "-", "portfolio the household belongs to"),
                _c("stratum", "str", "-", "aggregated (eligible for dispatch) or unaggregated"),
                _c("selection", "str", "-", "how it entered the sample: random or first_dispatched"),
                _c("interval_start", "time", "timestamp", "time the temperature was reached (end of a model step)"),
                _c("t_in_c", "float", "degC", "indoor temperature"),
                _c("t_min_c", "float", "degC", "lower comfort bound"),
                _c("t_max_c", "float", "degC", "upper comfort bound"),
                _c("dispatched", "bool", "-", "a change was asked of the home in the step (allocated != 0)"),
            ),
        ),
        Table(
            "households",
            "One row per household: owner, feeder, devices, comfort band and comfort breaches over the run.",
            (
                _c("household", "int", "-", "household index"),
                _c("metering_point", "str", "-", "portfolio the household belongs to"),
                _c("owner", "str", "-", "aggregator controlling it ('unaggregated' if none)"),
                _c("feeder", "str", "-", "feeder it is connected to"),
                _c("heating", "str", "-", "heat_pump, panel or none (not electrically heated)"),
                _c("has_ev", "bool", "-", "has an EV charger"),
                _c("has_battery", "bool", "-", "has a home battery"),
                _c("has_pv", "bool", "-", "has rooftop PV"),
                _c("t_min_c", "float", "degC", "lower comfort bound"),
                _c("t_max_c", "float", "degC", "upper comfort bound"),
                _c("comfort_violation_steps", "int", "-", "model steps spent outside the comfort band"),
                _c("comfort_violation_degree_minutes", "float", "K min", "how far and how long outside the band"),
                _c("ev_unmet_kwh", "float", "kWh", "EV energy missing at departure"),
            ),
        ),
        Table(
            "comfort",
            "One row per household at the end of the run: how often it was dispatched, its comfort breaches "
            "(below T_min; above T_max only while heating) and the part dispatch caused, which its aggregator "
            "compensates. A breach is caused by dispatch from a step in which dispatch gave the home less heat "
            "(below) or more heat (above) than its own controller would have, until the home is back in its "
            "band (the recovery after release included). Only an aggregator with dispatch.force breaches.",
            (
                _c("household", "int", "-", "household index"),
                _c("metering_point", "str", "-", "portfolio the household belongs to"),
                _c("owner", "str", "-", "aggregator controlling it ('unaggregated' if none)"),
                _c("feeder", "str", "-", "feeder it is connected to"),
                _c("heating", "str", "-", "heat_pump, panel or none"),
                _c("dispatched_steps", "int", "-", "model steps in which a change was asked of it"),
                _c("breach_steps", "int", "-", "model steps ending outside its comfort band"),
                _c("degree_hours_below", "float", "K h", "how far and how long below T_min"),
                _c("degree_hours_above", "float", "K h", "how far and how long above T_max while heating"),
                _c("forced_breach_steps", "int", "-", "breach steps caused by dispatch"),
                _c("forced_degree_hours_below", "float", "K h", "degree-hours below T_min caused by dispatch"),
                _c("forced_degree_hours_above", "float", "K h", "degree-hours above T_max caused by dispatch"),
                _c(
                    "compensation_dkk",
                    "float",
                    "DKK",
                    "received from its aggregator: forced degree-hours x the aggregator's "
                    "dispatch.comfort_compensation_dkk_per_degree_hour",
                ),
            ),
        ),
        Table(
            "comfort_compensation",
            "What each aggregator pays its households for the comfort breaches its dispatch caused, one row per "
            "aggregator and day with any (written at the end of each simulated day). Money is conserved: an "
            "aggregator's rows sum to its households' comfort.compensation_dkk.",
            (
                _c("aggregator", "str", "-", "the aggregator (pays)"),
                _c("payee", "str", "-", "who receives it: 'households' (each one's share in comfort)"),
                _c("day", "time", "timestamp", "start of the simulated day"),
                _c("households", "int", "-", "households with breaches caused by dispatch that day"),
                _c("degree_hours", "float", "K h", "degree-hours outside the band caused by dispatch that day"),
                _c("price_dkk_per_degree_hour", "float", "DKK/(K h)", "the aggregator's compensation price"),
                _c("compensation_dkk", "float", "DKK", "degree_hours x price, paid by the aggregator"),
            ),
        ),
        Table(
            "conflicts",
            "TSO bids that would have overloaded a feeder or worsened a DSO's congestion, and what the coordination "
            "rule did.",
            (
                _MARKET,
                _c("bid_id", "str", "-", "the TSO-market bid"),
                _c("seller", "str", "-", "bidder"),
                _c("feeder", "str", "-", "feeder the bid would overload or congest"),
                _IDX,
                _ISTART,
                _c("quantity_kw", "float", "kW", "kW taken out of the bid (refused, trimmed) or in conflict (allowed)"),
                _c("dso_market_id", "str", "-", "the DSO market holding the feeder then ('' if none)"),
                _c("rule", "str", "-", "coordination rule: grid_headroom, dso_prevails, tso_prevails"),
                _c("action", "str", "-", "refused (taken out of the book), trimmed (scaled down) or allowed"),
                _c("reason", "str", "-", "why it is a conflict"),
            ),
        ),
        Table(
            "flex_forecasts",
            "What each aggregator forecast and offered when it answered a bid request, per feeder and interval.",
            (
                _c("aggregator", "str", "-", "the seller"),
                _MARKET,
                _PRODUCT,
                _c("feeder", "str", "-", "feeder of the portfolio"),
                _IDX,
                _ISTART,
                _c("direction", "str", "-", "down or up"),
                _c("baseline_kw", "float", "kW", "forecast consumption without control"),
                _c("flex_kw", "float", "kW", "forecast flexibility that can be held over the delivery window"),
                _c("committed_kw", "float", "kW", "already reserved by open bids and awards in other markets"),
                _c("offered_kw", "float", "kW", "offered in this market, over all price steps"),
            ),
        ),
        # -- study tables (issue 11): inputs of the run, the no-flexibility twin and the KPIs -------------
        Table(
            "weather",
            "The weather the households saw (inputs written out), one row per model step of the horizon.",
            (
                _ISTART,
                _c("outdoor_temp_c", "float", "degC", "outdoor temperature"),
                _c("irradiance_w_m2", "float", "W/m2", "global horizontal irradiance"),
            ),
        ),
        Table(
            "spot_prices",
            "The spot price series the aggregators plan against, one row per model step of the horizon.",
            (
                _ISTART,
                _c("price_dkk_per_kwh", "float", "DKK/kWh", "spot price"),
            ),
        ),
        Table(
            "imbalance_prices",
            "Spot and imbalance prices per model step (the 'imbalance' settlement rule settles deviations at them).",
            (
                _ISTART,
                _c("spot_dkk_per_kwh", "float", "DKK/kWh", "spot price"),
                _c("short_dkk_per_kwh", "float", "DKK/kWh", "imbalance price, system short ('down' orders)"),
                _c("long_dkk_per_kwh", "float", "DKK/kWh", "imbalance price, system long ('up' orders)"),
            ),
        ),
        Table(
            "imbalance",
            "The system imbalance each TSO buyer covers (generated from the seed or read from CSV), per interval.",
            (
                _c("buyer", "str", "-", "TSO buyer"),
                _ISTART,
                _c("interval_minutes", "int", "min", "length of one interval"),
                _c("imbalance_kw", "float", "kW", "system imbalance; positive = system short (needs less consumption)"),
                _c("need_kw", "float", "kW", "the buyer's share of it (imbalance x share), before min_need_kw"),
            ),
        ),
        Table(
            "feeder_limits",
            "Every feeder's limit and the households on it, as the scenario set them.",
            (
                _c("feeder", "str", "-", "feeder ID"),
                _c("limit_kw", "float", "kW", "the feeder's limit (congestion above it)"),
                _c("households", "int", "-", "households on the feeder, aggregated or not"),
            ),
        ),
        Table(
            "feeder_compare",
            "Per feeder and model step, the load with flexibility traded (this run) against its no-flexibility "
            "twin (same seed, weather and households; every buyer's markets withheld). Empty without a twin.",
            (
                _c("feeder", "str", "-", "feeder ID"),
                _ISTART,
                _c("load_kw", "float", "kW", "load with flexibility (this run's feeder_load)"),
                _c("twin_load_kw", "float", "kW", "load without flexibility (the twin's feeder_load)"),
                _c("change_kw", "float", "kW", "load_kw - twin_load_kw (negative = flexibility lowered the load)"),
                _c("limit_kw", "float", "kW", "the feeder's limit"),
                _c("over_kw", "float", "kW", "max(0, load_kw - limit_kw)"),
                _c("twin_over_kw", "float", "kW", "max(0, twin_load_kw - limit_kw)"),
            ),
        ),
        Table(
            "rebound_events",
            "Per activation event of an aggregator, what its load did against the twin. An *event* is a maximal "
            "run of consecutive model steps in which the aggregator's scheduled change (accepted awards, or "
            "activations for products that activate: options and regulating power; down = shed) is non-zero "
            "with one sign. *Afterwards* runs from the event's end until the controlled and twin loads "
            "re-converge (|load - twin| <= tolerance_kw for 2 consecutive steps), the next event starts, "
            "12 hours pass, or the run ends (end_reason). Empty without a twin.",
            (
                _c("event_id", "int", "-", "event number within the run, in time order"),
                _c("participant", "str", "-", "the aggregator (all of its portfolios together)"),
                _c("direction", "str", "-", "down (shed) or up (added)"),
                _c("event_start", "time", "timestamp", "first step of the event"),
                _c("event_end", "time", "timestamp", "end of the event's last step"),
                _c("ordered_kwh", "float", "kWh", "scheduled change over the event (positive, in its direction)"),
                _c("shifted_kwh", "float", "kWh", "energy shed (down) or added (up) against the twin during the event"),
                _c("recovery_end", "time", "timestamp", "end of the 'afterwards' window"),
                _c("recovery_minutes", "int", "min", "length of the 'afterwards' window"),
                _c("recovered_kwh", "float", "kWh", "energy drawn back afterwards, in the opposite direction"),
                _c(
                    "rebound_peak_kw",
                    "float",
                    "kW",
                    "largest change against the twin afterwards, opposite direction (0 if none)",
                ),
                _c(
                    "rebound_ratio",
                    "float",
                    "-",
                    "recovered_kwh / shifted_kwh (null if nothing was shifted)",
                    nullable=True,
                ),
                _c("tolerance_kw", "float", "kW", "re-convergence tolerance: max(1 kW, 1 % of the twin's mean load)"),
                _c("end_reason", "str", "-", "converged, next_event, cap or horizon"),
            ),
        ),
        Table(
            "kpis",
            "Key figures of the run in long format (one row per scope, key and metric), computed from the run's "
            "tables by flech_sim.kpis at the end of the run; the metrics are listed in flech_sim.kpis.METRICS. "
            "Figures that need the twin are absent when it is switched off.",
            (
                _c("scope", "str", "-", "run, product, aggregator or feeder"),
                _c("product_id", "str", "-", "product (null = all products)", nullable=True),
                _c("participant", "str", "-", "aggregator (null = all participants)", nullable=True),
                _c("feeder", "str", "-", "feeder (scope feeder only)", nullable=True),
                _c("metric", "str", "-", "metric name (flech_sim.kpis.METRICS)"),
                _c("value", "float", "-", "value (null = undefined, e.g. a ratio over nothing)", nullable=True),
                _c("unit", "str", "-", "unit of the value"),
            ),
        ),
        Table(
            "agent_errors",
            "Messages a participant received and could not act on (a kind it has no handler for): "
            "recorded, never silently dropped. Empty in a sound run.",
            (
                _c("participant", "str", "-", "the receiving participant"),
                _MSG,
                _c("kind", "str", "-", "kind of the message"),
                _MARKET,
                _PRODUCT,
                _c("at", "time", "timestamp", "simulated time it was received"),
                _c("error", "str", "-", "error code: unhandled_kind"),
                _c("detail", "str", "-", "human-readable explanation"),
            ),
        ),
    )
}


ROW_TYPES: dict[str, type[tuple[Any, ...]]] = {}
"""Per table, a named-tuple row type in column order: rows are built by name (``row('bids', bid_id=..., ...)``),
so a column added or moved in :data:`TABLES` cannot silently shift values, and the persistor's fast
tuple path stays (a named tuple *is* a tuple)."""


def _row_type(table: Table) -> type[tuple[Any, ...]]:
    return namedtuple(f"{table.name}_row", table.names)


def register_table(table: Table) -> None:
    """Add a table of a plug-in product (before the run's persistor is created); a name may be taken once."""
    if table.name in TABLES and TABLES[table.name] != table:
        raise ValueError(f"table {table.name!r} is already defined differently")
    TABLES[table.name] = table
    ROW_TYPES[table.name] = _row_type(table)


def row(table: str, **values: Any) -> tuple[Any, ...]:
    """One row of ``table`` built by column name; a missing or unknown column raises TypeError."""
    return ROW_TYPES[table](**values)


for _t in TABLES.values():
    ROW_TYPES[_t.name] = _row_type(_t)


def markdown_reference() -> str:
    """The table reference as Markdown (README and ``flech-sim tables``)."""
    out: list[str] = []
    for t in TABLES.values():
        out.append(f"### `{t.name}.parquet`\n\n{t.doc}\n")
        out.append("| column | type | unit | meaning |\n|---|---|---|---|")
        for c in t.columns:
            typ = c.type + (" (nullable)" if c.nullable else "")
            out.append(f"| `{c.name}` | {typ} | {c.unit} | {c.doc} |")
        out.append("")
    return "\n".join(out)
