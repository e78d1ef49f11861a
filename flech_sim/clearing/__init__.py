"""Pure market clearing for FLECH: least-cost acceptance of bids against a need.

No simulation machinery here (no simpy, no agents): a ClearingProblem goes in, a
ClearingOutcome comes out. ``clear`` picks the method (exact merit order without block
bids, HiGHS MILP with them; the pyomo model is the readable reference) and never raises
for solver trouble: it returns an ERROR/FEASIBLE outcome with a message instead.
"""

from flech_sim.clearing.least_cost import clear, resolve_method
from flech_sim.clearing.problem import (
    BidOffer,
    ClearingMethod,
    ClearingOutcome,
    ClearingProblem,
    ClearingStatus,
    SolverOptions,
)

__all__ = [
    "BidOffer",
    "ClearingMethod",
    "ClearingOutcome",
    "ClearingProblem",
    "ClearingStatus",
    "SolverOptions",
    "clear",
    "resolve_method",
]
