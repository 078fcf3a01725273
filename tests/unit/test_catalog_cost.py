"""Catalog loading/validation and the cost ledger: hand-computed bills and monotonicity properties."""

from __future__ import annotations

import copy
import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.economics.catalog import (
    DEFAULT_CATALOG_PATH,
    Catalog,
    CatalogError,
    UnknownInstanceTypeError,
    load_catalog,
)
from orchestrator.economics.ledger import CostLedger, LedgerError

REQUIRED_TYPES = [
    "c5.large",
    "c5.xlarge",
    "c5.2xlarge",
    "c5.4xlarge",
    "m5.large",
    "m5.xlarge",
    "c6i.large",
    "c6i.xlarge",
    "c6i.2xlarge",
    "g4dn.xlarge",
    "g5.xlarge",
    "p3.2xlarge",
]
INSTANCE_FIGURES = [
    "on_demand_usd_per_hour",
    "spot_usd_per_hour_typical",
    "boot_seconds",
    "sagemaker_realtime_usd_per_hour",
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write_variant(tmp_path: Path, raw: dict[str, Any], edit: Any) -> Path:
    data = copy.deepcopy(raw)
    edit(data)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# --- catalog -------------------------------------------------------------------------------------


def test_catalog_loads_with_every_required_type(catalog: Catalog) -> None:
    assert set(REQUIRED_TYPES) <= set(catalog.instance_types)
    assert catalog.region == "us-east-1"
    assert catalog.min_billed_seconds == 60
    assert catalog.lambda_.default_concurrency.value == 1000
    assert (catalog.lambda_.memory_mb.min, catalog.lambda_.memory_mb.max) == (128, 10240)
    assert catalog.lambda_.ephemeral_storage_mb.included == 512
    gpu = catalog.instance("g4dn.xlarge").gpu
    assert gpu is not None and gpu.count == 1 and "T4" in gpu.model
    assert catalog.instance("c5.large").gpu is None


def test_published_on_demand_and_lambda_prices(catalog: Catalog) -> None:
    """Guards against accidental edits: the us-east-1 Linux On-Demand list prices the catalog cites."""
    expected = {
        "c5.large": 0.085,
        "c5.xlarge": 0.17,
        "c5.2xlarge": 0.34,
        "c5.4xlarge": 0.68,
        "m5.large": 0.096,
        "m5.xlarge": 0.192,
        "c6i.large": 0.085,
        "c6i.xlarge": 0.17,
        "c6i.2xlarge": 0.34,
        "g4dn.xlarge": 0.526,
        "g5.xlarge": 1.006,
        "p3.2xlarge": 3.06,
    }
    assert {t: catalog.price_usd_per_hour(t, "on-demand") for t in expected} == expected
    assert catalog.lambda_.gb_second_price("x86_64") == 0.0000166667
    assert catalog.lambda_.gb_second_price("arm64") == 0.0000133334
    assert catalog.lambda_.usd_per_million_requests.value == 0.20


def test_every_figure_carries_source_and_as_of(raw: dict[str, Any], catalog: Catalog) -> None:
    def check(fig: Any, where: str) -> None:
        assert isinstance(fig, dict), where
        assert isinstance(fig.get("source"), str) and fig["source"].strip(), f"{where}: no source"
        assert isinstance(fig.get("as_of"), dt.date), f"{where}: no as_of date"
        assert fig.get("confidence") in {"verified", "corroborated", "estimate", "unverified"}, where

    for name, entry in raw["instance_types"].items():
        check(entry["specs"], f"{name}.specs")
        for key in INSTANCE_FIGURES:
            check(entry[key], f"{name}.{key}")
    for key, fig in raw["ec2_billing"].items():
        check(fig, f"ec2_billing.{key}")
    lam = raw["lambda"]
    for arch, fig in lam["usd_per_gb_second"].items():
        check(fig, f"lambda.usd_per_gb_second.{arch}")
    for key, fig in lam.items():
        if key != "usd_per_gb_second":
            check(fig, f"lambda.{key}")
    # The models enforce the same, and that estimates say how and unverified figures say why.
    for it in catalog.instance_types.values():
        for key in INSTANCE_FIGURES:
            fig = getattr(it, key)
            assert fig.source and isinstance(fig.as_of, dt.date)
            if fig.confidence == "estimate":
                assert fig.basis
            if fig.confidence == "unverified":
                assert fig.note
    # Spot and boot time are estimates and must say so; On-Demand prices are published figures.
    assert all(it.spot_usd_per_hour_typical.confidence == "estimate" for it in catalog.instance_types.values())
    assert all(it.on_demand_usd_per_hour.confidence == "verified" for it in catalog.instance_types.values())


def test_gpu_types_boot_slower_than_cpu_types(catalog: Catalog) -> None:
    cpu = max(catalog.boot_seconds(t) for t, it in catalog.instance_types.items() if it.gpu is None)
    gpu = min(catalog.boot_seconds(t) for t, it in catalog.instance_types.items() if it.gpu is not None)
    assert gpu > cpu


def test_lookup_helpers(catalog: Catalog) -> None:
    assert (
        catalog.price_usd_per_hour("c5.large", "spot") == catalog.instance("c5.large").spot_usd_per_hour_typical.value
    )
    with pytest.raises(UnknownInstanceTypeError) as e:
        catalog.instance("c9.mega")
    msg = str(e.value)
    assert "'c9.mega'" in msg and "c5.large" in msg and "p3.2xlarge" in msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, KeyError)
    with pytest.raises(ValueError, match="market must be one of 'on-demand', 'spot', got 'reserved'"):
        catalog.price_usd_per_hour("c5.large", "reserved")
    with pytest.raises(ValueError, match="architecture must be one of"):
        catalog.lambda_.gb_second_price("riscv")


def test_catalog_models_are_frozen(catalog: Catalog) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        catalog.instance("c5.large").on_demand_usd_per_hour.value = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["instance_types"]["c5.large"]["on_demand_usd_per_hour"].__setitem__("value", "abc"),
            "instance_types.c5.large.on_demand_usd_per_hour.value: must be a positive number, got 'abc'",
        ),
        (
            lambda d: d["instance_types"]["c5.large"]["on_demand_usd_per_hour"].__setitem__("value", -0.085),
            "instance_types.c5.large.on_demand_usd_per_hour.value: must be a positive number, got -0.085",
        ),
        (
            lambda d: d["instance_types"]["m5.large"].pop("boot_seconds"),
            "instance_types.m5.large.boot_seconds: required field is missing",
        ),
        (
            lambda d: d["instance_types"]["g5.xlarge"]["sagemaker_realtime_usd_per_hour"].pop("source"),
            "instance_types.g5.xlarge.sagemaker_realtime_usd_per_hour.source: required field is missing",
        ),
        (
            lambda d: d["lambda"]["usd_per_gb_second"]["arm64"].__setitem__("as_of", "last week"),
            "lambda.usd_per_gb_second.arm64.as_of: must be a date written YYYY-MM-DD, got 'last week'",
        ),
        (
            lambda d: d["instance_types"]["c5.xlarge"]["boot_seconds"].__setitem__("confidence", "pretty sure"),
            "instance_types.c5.xlarge.boot_seconds.confidence: must be one of 'verified', 'corroborated', "
            "'estimate' or 'unverified', got 'pretty sure'",
        ),
        (
            lambda d: d["instance_types"]["c5.xlarge"]["boot_seconds"].pop("basis"),
            "instance_types.c5.xlarge.boot_seconds: confidence 'estimate' needs a 'basis'",
        ),
        (
            lambda d: d["instance_types"]["c5.xlarge"].__setitem__("vcpus", 4),
            "instance_types.c5.xlarge.vcpus: unknown field (allowed here: vcpu, memory_gib, gpu,",
        ),
        (
            lambda d: d["instance_types"]["c5.xlarge"].__setitem__("vcpu", 2.5),
            "instance_types.c5.xlarge.vcpu: must be a positive integer, got 2.5",
        ),
        (
            lambda d: d["lambda"]["default_concurrency"].__setitem__("value", True),
            "lambda.default_concurrency.value: must be a positive integer, got True",
        ),
        (
            lambda d: d["instance_types"]["c5.large"]["spot_usd_per_hour_typical"].__setitem__("value", 1.0),
            "instance_types.c5.large: spot_usd_per_hour_typical (1.0) must not exceed on_demand_usd_per_hour (0.085)",
        ),
        (lambda d: d.pop("lambda"), "lambda: required field is missing"),
        (
            lambda d: d["lambda"]["memory_mb"].__setitem__("min", 20000),
            "lambda.memory_mb: min (20000) must not exceed max (10240)",
        ),
    ],
)
def test_malformed_catalog_names_the_field(tmp_path: Path, raw: dict[str, Any], edit: Any, expected: str) -> None:
    path = write_variant(tmp_path, raw, edit)
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert expected in str(e.value)
    assert str(path) in str(e.value)


def test_missing_file_and_bad_yaml_say_which_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "catalog.yaml"
    with pytest.raises(CatalogError, match="catalog file not found: .*nope/catalog.yaml"):
        load_catalog(missing)
    dup = tmp_path / "dup.yaml"
    dup.write_text("instance_types:\n  c5.large: {}\n  c5.large: {}\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="duplicate key 'c5.large'") as e:
        load_catalog(dup)
    assert str(dup) in str(e.value)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="must be a YAML mapping at top level"):
        load_catalog(scalar)


# --- ledger: hand-computed bills -------------------------------------------------------------------


def test_short_launch_is_billed_the_60_second_minimum(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    ledger.instance_started("i-1", "c5.large", "on-demand", at_s=100.0)
    ledger.instance_stopped("i-1", at_s=130.0)
    snap = ledger.snapshot(1000.0)
    assert snap.instance_seconds == 60.0
    assert snap.instance_usd == pytest.approx(0.00141666666666667, rel=1e-12)  # 60 s x $0.085/h
    assert snap.spot_usd == 0.0
    assert snap.total_usd == snap.instance_usd


def test_longer_launch_is_billed_per_second(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    ledger.instance_started("i-1", "c5.large", "on-demand", at_s=0.0)
    ledger.instance_stopped("i-1", at_s=90.0)
    snap = ledger.snapshot(90.0)
    assert snap.instance_seconds == 90.0
    assert snap.instance_usd == pytest.approx(0.002125, rel=1e-12)  # 90 s x $0.085/h


def test_partial_seconds_round_up_but_clock_noise_does_not(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    assert ledger.billed_seconds(0.0) == 60.0
    assert ledger.billed_seconds(60.2) == 61.0
    assert ledger.billed_seconds(90.4) == 91.0
    assert ledger.billed_seconds(90.0000000001) == 90.0


def test_spot_uses_the_spot_price(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    ledger.instance_started("i-s", "c5.large", "spot", at_s=0.0)
    ledger.instance_started("i-o", "c5.large", "on-demand", at_s=0.0)
    ledger.instance_stopped("i-s", at_s=90.0)
    ledger.instance_stopped("i-o", at_s=90.0)
    snap = ledger.snapshot(90.0)
    assert catalog.price_usd_per_hour("c5.large", "spot") == 0.034
    assert snap.spot_usd == pytest.approx(0.00085, rel=1e-12)  # 90 s x $0.034/h
    assert snap.instance_usd == pytest.approx(0.00085 + 0.002125, rel=1e-12)
    assert snap.on_demand_usd == pytest.approx(0.002125, rel=1e-12)


def test_running_instances_are_billed_up_to_now_with_the_minimum(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    ledger.instance_started("i-g", "g4dn.xlarge", "on-demand", at_s=100.0)
    assert ledger.snapshot(110.0).instance_usd == pytest.approx(60 * 0.526 / 3600, rel=1e-12)
    snap = ledger.snapshot(100.0 + 3600.0)
    assert snap.instance_usd == pytest.approx(0.526, rel=1e-12)  # one hour at $0.526/h
    assert snap.instances_running == 1
    assert ledger.running_instances() == {"i-g": ("g4dn.xlarge", "on-demand", 100.0)}


def test_each_start_of_the_same_instance_pays_its_own_minimum(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    ledger.instance_started("i-1", "m5.large", "on-demand", at_s=0.0)
    ledger.instance_stopped("i-1", at_s=10.0)
    ledger.instance_started("i-1", "m5.large", "on-demand", at_s=20.0)
    ledger.instance_stopped("i-1", at_s=30.0)
    snap = ledger.snapshot(30.0)
    assert snap.instance_seconds == 120.0
    assert snap.instance_usd == pytest.approx(120 * 0.096 / 3600, rel=1e-12)  # $0.0032


def test_lambda_invocations_gb_seconds_and_requests(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    for _ in range(1000):
        ledger.lambda_invocation(billed_duration_ms=120, memory_mb=2048)
    snap = ledger.snapshot(0.0)
    # 1000 x 0.120 s x 2 GB = 240 GB-s; x $0.0000166667 = $0.004000008; 1000 requests x $0.20/1M = $0.0002
    assert snap.lambda_gb_seconds == 240.0
    assert snap.lambda_invocations == 1000
    assert snap.lambda_compute_usd == pytest.approx(0.004000008, rel=1e-12)
    assert snap.lambda_request_usd == pytest.approx(0.0002, rel=1e-12)
    assert snap.total_usd == pytest.approx(0.004200008, rel=1e-12)
    assert snap.lambda_usd == pytest.approx(0.004200008, rel=1e-12)


def test_a_weighted_invocation_bills_as_that_many(catalog: Catalog) -> None:
    """A replay compressed by time factor 0.1 sends one request for ten: 100 invocations of weight 10
    cost what 1000 do (the figures of the test above), and a bad weight is refused."""
    ledger = CostLedger(catalog)
    for _ in range(100):
        ledger.lambda_invocation(120, 2048, weight=10.0)
    snap = ledger.snapshot(0.0)
    assert snap.lambda_invocations == 1000 and snap.lambda_gb_seconds == pytest.approx(240.0, rel=1e-12)
    assert snap.lambda_usd == pytest.approx(0.004200008, rel=1e-12)
    for bad in (0, -1.0, math.nan, True):
        with pytest.raises(LedgerError, match="weight must be a finite number > 0"):
            ledger.lambda_invocation(120, 2048, weight=bad)  # type: ignore[arg-type]


def test_lambda_arm64_price(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    for _ in range(1000):
        ledger.lambda_invocation(120, 2048, architecture="arm64")
    snap = ledger.snapshot(0.0)
    assert snap.lambda_compute_usd == pytest.approx(240 * 0.0000133334, rel=1e-12)  # $0.003200016


def test_cost_per_million_requests(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    assert ledger.snapshot(0.0).usd_per_million_requests is None
    ledger.instance_started("i-1", "c5.large", "on-demand", at_s=0.0)
    ledger.instance_stopped("i-1", at_s=90.0)  # $0.002125
    for _ in range(1000):
        ledger.lambda_invocation(120, 2048)  # $0.004200008
    ledger.requests("instance", n=4000)
    ledger.requests("lambda", n=1000)
    snap = ledger.snapshot(90.0)
    assert snap.requests_by_route == {"instance": 4000, "lambda": 1000}
    assert snap.requests_total == 5000
    assert snap.total_usd == pytest.approx(0.006325008, rel=1e-12)
    assert snap.usd_per_million_requests == pytest.approx(1.2650016, rel=1e-12)  # 0.006325008 / 5000 x 1e6


def test_snapshot_is_a_frozen_dataclass(catalog: Catalog) -> None:
    import dataclasses

    snap = CostLedger(catalog).snapshot(0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.total_usd = 1.0  # type: ignore[misc]


# --- ledger: errors ---------------------------------------------------------------------------------


def test_stopping_unknown_or_stopped_instances_is_an_error(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    with pytest.raises(LedgerError, match="'i-404' is not running: it was never started"):
        ledger.instance_stopped("i-404", at_s=1.0)
    ledger.instance_started("i-1", "c5.large", "on-demand", at_s=0.0)
    ledger.instance_stopped("i-1", at_s=5.0)
    with pytest.raises(LedgerError, match="'i-1' is not running: already stopped at t=5 s"):
        ledger.instance_stopped("i-1", at_s=6.0)


def test_other_accounting_errors(catalog: Catalog) -> None:
    ledger = CostLedger(catalog)
    ledger.instance_started("i-1", "c5.large", "on-demand", at_s=10.0)
    with pytest.raises(LedgerError, match="already running"):
        ledger.instance_started("i-1", "c5.large", "on-demand", at_s=11.0)
    with pytest.raises(LedgerError, match="before it started"):
        ledger.instance_stopped("i-1", at_s=5.0)
    with pytest.raises(LedgerError, match="earlier than the last recorded instance event"):
        ledger.snapshot(9.0)
    with pytest.raises(UnknownInstanceTypeError, match="the catalog knows: .*c5.large"):
        ledger.instance_started("i-2", "x1.tiny", "on-demand", at_s=12.0)
    with pytest.raises(ValueError, match="market must be one of"):
        ledger.instance_started("i-2", "c5.large", "reserved", at_s=12.0)
    with pytest.raises(LedgerError, match="finite number"):
        ledger.instance_started("i-2", "c5.large", "spot", at_s=float("nan"))
    with pytest.raises(LedgerError, match="billed_duration_ms must be a whole number"):
        ledger.lambda_invocation(12.5, 1024)  # type: ignore[arg-type]
    with pytest.raises(LedgerError, match=r"memory_mb must be a whole number of MB in 128\.\.10240, got 64"):
        ledger.lambda_invocation(100, 64)
    with pytest.raises(LedgerError, match="architecture must be one of"):
        ledger.lambda_invocation(100, 1024, architecture="sparc")
    with pytest.raises(LedgerError, match="route must be one of 'instance', 'lambda'"):
        ledger.requests("sagemaker")
    with pytest.raises(LedgerError, match="n must be a whole number"):
        ledger.requests("lambda", n=-1)


# --- ledger: properties ------------------------------------------------------------------------------

launch_st = st.tuples(
    st.sampled_from(REQUIRED_TYPES),
    st.sampled_from(["on-demand", "spot"]),
    st.floats(min_value=0.0, max_value=5000.0, allow_nan=False),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=4000.0, allow_nan=False)),
)
invocation_st = st.tuples(
    st.integers(min_value=1, max_value=900_000),
    st.integers(min_value=128, max_value=10240),
    st.sampled_from(["x86_64", "arm64"]),
)


@settings(max_examples=200, deadline=None)
@given(
    launches=st.lists(launch_st, max_size=8),
    invocations=st.lists(invocation_st, max_size=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False), min_size=2, max_size=6),
)
def test_cost_never_decreases_as_time_passes(
    catalog: Catalog,
    launches: list[tuple[str, str, float, float | None]],
    invocations: list[tuple[int, int, str]],
    gaps: list[float],
) -> None:
    ledger = CostLedger(catalog)
    last = 0.0
    for i, (itype, market, start, duration) in enumerate(launches):
        ledger.instance_started(f"i-{i}", itype, market, at_s=start)
        last = max(last, start)
        if duration is not None:
            ledger.instance_stopped(f"i-{i}", at_s=start + duration)
            last = max(last, start + duration)
    for ms, mem, arch in invocations:
        ledger.lambda_invocation(ms, mem, arch)
    now = last
    previous = ledger.snapshot(now)
    for gap in gaps:
        now += gap
        snap = ledger.snapshot(now)
        assert snap.total_usd >= previous.total_usd
        assert snap.instance_usd >= previous.instance_usd
        assert snap.spot_usd >= previous.spot_usd
        assert snap.instance_seconds >= previous.instance_seconds
        assert snap.instance_seconds >= 60.0 * len(launches)  # every launch pays at least the minimum
        previous = snap


@settings(max_examples=200, deadline=None)
@given(invocations=st.lists(invocation_st, min_size=1, max_size=30), running=st.booleans())
def test_cost_never_decreases_with_more_invocations(
    catalog: Catalog, invocations: list[tuple[int, int, str]], running: bool
) -> None:
    ledger = CostLedger(catalog)
    if running:
        ledger.instance_started("i-1", "c5.large", "spot", at_s=0.0)
    previous = ledger.snapshot(100.0)
    for n, (ms, mem, arch) in enumerate(invocations, start=1):
        ledger.lambda_invocation(ms, mem, arch)
        snap = ledger.snapshot(100.0)
        assert snap.total_usd >= previous.total_usd
        assert snap.lambda_compute_usd >= previous.lambda_compute_usd
        assert snap.lambda_invocations == n
        assert snap.lambda_request_usd == pytest.approx(n * 0.20 / 1_000_000, rel=1e-12)
        previous = snap


def test_one_lambda_price_formula_for_planner_and_ledger() -> None:
    from orchestrator.economics.lambda_price import billed_ms, usd_per_invocation

    catalog = load_catalog()
    lam = catalog.lambda_
    assert billed_ms(lam, 10.2) == 11 and billed_ms(lam, 0.0) == 1
    by_hand = lam.usd_per_million_requests.value / 1e6 + lam.usd_per_gb_second.x86_64.value * 2048 / 1024 * 0.011
    assert usd_per_invocation(lam, 2048, 10.2) == pytest.approx(by_hand, rel=1e-12)
    ledger = CostLedger(catalog)
    for _ in range(1000):
        ledger.lambda_invocation(billed_ms(lam, 10.2), 2048)
    assert ledger.snapshot(0.0).lambda_usd == pytest.approx(1000 * by_hand, rel=1e-9)
