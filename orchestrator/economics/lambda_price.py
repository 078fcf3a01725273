"""What one Lambda invocation costs: the one formula, used by the planner's inputs and the ledger.

AWS Lambda pricing (profiles/catalog.yaml, with its sources): a price per request plus GB-seconds,
memory (GB) x duration rounded up to the billing granularity (1 ms), at the architecture's price.
"""

from __future__ import annotations

import math

from orchestrator.economics.catalog import LambdaPricing


def billed_ms(pricing: LambdaPricing, duration_ms: float) -> int:
    """Duration rounded up to Lambda's billing granularity, in ms (at least one unit)."""
    unit = pricing.billing_granularity_ms.value
    return max(unit, math.ceil(duration_ms / unit) * unit)


def compute_usd(pricing: LambdaPricing, memory_mb: float, duration_ms: float, architecture: str = "x86_64") -> float:
    """The GB-seconds part of invocations totalling ``duration_ms`` already billed (rounded) at ``memory_mb``."""
    return pricing.gb_second_price(architecture) * memory_mb / 1024 * duration_ms / 1000


def usd_per_invocation(
    pricing: LambdaPricing, memory_mb: float, duration_ms: float, architecture: str = "x86_64"
) -> float:
    """One invocation of ``duration_ms`` at ``memory_mb``: request price + billed GB-seconds, in USD.

    Raises:
        ValueError: unknown architecture (from the catalog).
    """
    return pricing.usd_per_request + compute_usd(pricing, memory_mb, billed_ms(pricing, duration_ms), architecture)
