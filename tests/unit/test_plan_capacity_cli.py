"""``mark plan capacity``: capacity at SLO and $ per 1M requests per type and market, in-process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.economics.capacity import CapacityRow, capacity_report
from orchestrator.economics.catalog import load_catalog


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def table_rows(out: str) -> list[list[str]]:
    """The data lines of the printed tables, split into columns."""
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) == 10 and cols[2] in ("on-demand", "spot"):
            rows.append(cols)
    return rows


def test_one_model_prints_both_markets_sorted_by_cost(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no model repository anywhere near: profiles are committed files
    monkeypatch.setenv("MARK_MODEL_REPO", str(tmp_path / "absent"))
    code, out, err = run(
        ["plan", "capacity", "--model", "mobilenet_v2", "--rt-max-ms", "200", "--sl-min", "0.98",
         "--types", "c5.large", "c5.xlarge", "g4dn.xlarge"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "model" in out and "capacity req/s" in out and "$ per 1M" in out
    rows = table_rows(out)
    assert {(r[1], r[2]) for r in rows} == {
        (t, m) for t in ("c5.large", "c5.xlarge", "g4dn.xlarge") for m in ("on-demand", "spot")
    }
    costs = [float(r[8]) for r in rows]
    assert costs == sorted(costs)
    assert all(r[0] == "mobilenet_v2" and r[9] == "estimated" for r in rows)
    slots = {r[1]: int(r[3]) for r in rows}
    assert slots == {"c5.large": 1, "c5.xlarge": 2, "g4dn.xlarge": 1}


def test_family_prints_every_variant_and_int8_only_on_cpus(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["plan", "capacity", "--family", "imagenet", "--types", "c5.large", "g5.xlarge"], capsys)
    assert code == 0, err
    rows = table_rows(out)
    models = {r[0] for r in rows}
    assert models == {
        "mobilenet_v2",
        "mobilenet_v2_int8",
        "efficientnet_lite0",
        "efficientnet_lite0_int8",
        "efficientnet_lite1",
        "efficientnet_lite2",
    }
    assert {r[1] for r in rows if r[0].endswith("_int8")} == {"c5.large"}
    assert "mobilenet_v2_int8        no row on g5.xlarge" in out and "ConvInteger" in out


def test_explain_prints_how_each_profile_was_obtained(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["plan", "capacity", "--model", "efficientnet_lite1", "--types", "m5.large", "p3.2xlarge", "--explain"], capsys
    )
    assert code == 0
    assert "how: estimated: m5.large has 2 vCPUs = 1 physical core" in out
    assert "how: estimated (no GPU measured)" in out and "15.7 TFLOPS" in out


def test_infeasible_slo_leaves_the_type_out_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["plan", "capacity", "--model", "mobilenet_v2", "--rt-max-ms", "12", "--types", "c5.large", "g5.xlarge"], capsys
    )
    assert code == 0
    assert {r[1] for r in table_rows(out)} == {"g5.xlarge"}
    assert "no row on c5.large" in out and "T_p99(1)" in out


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--model", "resnet50"], "--model"),
        (["--model", "mobilenet_v2", "--types", "c5.large", "x9.mega"], "--types"),
        (["--family", "audio"], "--family"),
        (["--model", "mobilenet_v2", "--sl-min", "1.5"], "--sl-min"),
        (["--model", "mobilenet_v2", "--sl-min", "0"], "--sl-min"),
        (["--model", "mobilenet_v2", "--rt-max-ms", "0"], "--rt-max-ms"),
        (["--model", "mobilenet_v2", "--rt-max-ms", "-3"], "--rt-max-ms"),
        (["--model", "mobilenet_v2", "--rt-max-ms", "abc"], "--rt-max-ms"),
        (["--model", "mobilenet_v2", "--epsilon-ms", "-1"], "--epsilon-ms"),
        ([], "--model"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(args: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["plan", "capacity", *args], capsys)
    assert code == 2
    assert flag in err
    assert table_rows(out) == []


def test_capacity_report_is_what_the_planner_consumes() -> None:
    catalog = load_catalog()
    report = capacity_report("efficientnet_lite0", catalog, 200.0, 0.98, 5.0, types=["c5.xlarge", "g4dn.xlarge"])
    rows = report.rows
    assert [p.key for p in report.pools()] == [(r.instance_type, r.market) for r in rows]
    assert [p.capacity_rps for p in report.pools()] == [r.capacity_rps for r in rows]
    assert all(isinstance(r, CapacityRow) for r in rows)
    assert [r.usd_per_million for r in rows] == sorted(r.usd_per_million for r in rows)
    for r in rows:
        assert r.usd_per_hour == catalog.price_usd_per_hour(r.instance_type, r.market)
        assert r.boot_seconds == catalog.boot_seconds(r.instance_type)
        assert r.capacity_rps > 0 and math.isfinite(r.usd_per_million)
        assert r.usd_per_million == pytest.approx(r.usd_per_hour / 3600 / r.capacity_rps * 1e6)
        assert r.source == "estimated" and r.method
        assert r.batch_timeout_ms + 5.0 <= 200.0
    spot = {r.instance_type: r for r in rows if r.market == "spot"}
    on_demand = {r.instance_type: r for r in rows if r.market == "on-demand"}
    # Same instance, same capacity; only the price differs between markets.
    assert all(spot[t].capacity_rps == on_demand[t].capacity_rps for t in spot)
    assert all(spot[t].usd_per_million < on_demand[t].usd_per_million for t in spot)


def test_capacity_report_keeps_why_a_type_has_no_row() -> None:
    report = capacity_report("mobilenet_v2_int8", load_catalog(), 200.0, 0.98, types=["c6i.large", "p3.2xlarge"])
    assert {r.instance_type for r in report.rows} == {"c6i.large"}
    assert [name for name, _ in report.skipped] == ["p3.2xlarge"]
    assert "ConvInteger" in report.skipped[0][1]
