"""Provisioning planning (DESIGN.md §3 "Planner"): the one import point of the planning API.

``problem`` (input, schedule, the one cost model), ``milp`` (ours, and the oracle), ``milp_program``
(the MILP's rows and the HiGHS solve), ``fleet_dp`` (the integer fleet around the LP), ``mark_greedy``
(MArk's published heuristic, the baseline).
"""

from orchestrator.policy.planning.mark_greedy import mark_greedy
from orchestrator.policy.planning.milp import dominated_pools, milp, oracle
from orchestrator.policy.planning.problem import (
    ON_DEMAND,
    SPOT,
    UNSERVED_USD_PER_REQUEST,
    CostSplit,
    FleetInstance,
    LambdaOption,
    Plan,
    PlanInput,
    PoolArrays,
    PoolOption,
    Schedule,
    evaluate,
)

# The fleet planners by the name a deployment config or `mark plan fleet --planner` gives.
PLANNERS = {"milp": milp, "mark_greedy": mark_greedy}

__all__ = [
    "PLANNERS",
    "ON_DEMAND",
    "SPOT",
    "UNSERVED_USD_PER_REQUEST",
    "CostSplit",
    "FleetInstance",
    "LambdaOption",
    "Plan",
    "PlanInput",
    "PoolArrays",
    "PoolOption",
    "Schedule",
    "dominated_pools",
    "evaluate",
    "mark_greedy",
    "milp",
    "oracle",
]
