"""Constants and cross-module defaults: each defined here once, imported everywhere else.

A leaf module (imports nothing from flech_sim), so the clearing functions, the
household physics and the scenario models can all use it without a cycle. The
scenario models (:mod:`flech_sim.scenario`) remain the home of a *run's*
configurable defaults; where a default is also needed outside a scenario (the
solver's, when clearing is called directly), both take it from here.
"""

from __future__ import annotations

MINUTES_PER_HOUR = 60
MINUTES_PER_DAY = 24 * MINUTES_PER_HOUR
"""Simulated time is whole minutes from the scenario start; days are these many minutes."""

SOLVER_TIME_LIMIT_S = 30.0
"""Wall-clock limit of one clearing solve: the default of ``SolverConfig`` (scenario) and ``SolverOptions``."""

EXIT_OK = 0
"""Command line: success."""
EXIT_RUN_FAILED = 1
"""Command line: a run (or a run of a sweep) failed."""
EXIT_DIFFERENT = 1
"""Command line (``check``): the outcomes differ from the golden ones (same code as a failure: look at it)."""
EXIT_BAD_INPUT = 2
"""Command line: unreadable or invalid input (scenario, directory, option)."""
