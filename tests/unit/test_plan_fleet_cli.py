"""``mark plan fleet``: both planners on a demand forecast from the capacity table, in-process."""

from __future__ import annotations

import re

import pytest

from orchestrator.cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(["plan", "fleet", *argv])
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def totals(out: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(milp|mark_greedy) +([0-9.]+) ", out, re.M)}


def steps(out: str, planner: str) -> list[list[str]]:
    """The per-step rows of one planner's table: step, demand, capacity, Lambda, unserved, fleet."""
    block = out.split(f"{planner}: serving fleet per step\n", 1)[1].split("\n\n", 1)[0]
    return [line.split(None, 5) for line in block.splitlines()[1:] if line[:4].strip().isdigit()]


def test_milp_covers_the_forecast_for_less_than_mark(capsys: pytest.CaptureFixture[str]) -> None:
    demand = [300, 300, 320, 900, 900, 900, 400, 300]
    code, out, err = run(
        ["--model", "mobilenet_v2", "--demand", ",".join(map(str, demand)), "--fleet", "c5.large:on-demand:2"],
        capsys,
    )
    assert code == 0, err
    cost = totals(out)
    assert set(cost) == {"milp", "mark_greedy"} and 0 < cost["milp"] < cost["mark_greedy"]
    assert "running now: 2 instances" in out and "estimated: this machine's one-thread T(1)" in out
    for planner in cost:
        rows = steps(out, planner)
        assert [float(r[1]) for r in rows] == demand
        for r in rows:  # every step covered: instances + Lambda
            assert float(r[2]) + float(r[3]) >= float(r[1]) - 0.05
        assert all(float(r[4]) == 0 for r in rows)
        assert rows[0][5] == "c5.large:on-demand x2"  # nothing launched now serves before its boot
    assert all("spot" not in r[5] for r in steps(out, "mark_greedy"))  # MArk: on-demand only


def test_a_short_spike_goes_to_lambda_unless_lambda_is_dear_and_small(capsys: pytest.CaptureFixture[str]) -> None:
    # 10 s steps, a one-step spike at step 8: a launch is billed through its boot and EC2's 60 s minimum.
    spike = ["--model", "mobilenet_v2", "--demand", "100," * 8 + "400,100,100,100", "--step-s", "10"]
    spike += ["--planner", "milp", "--spot-cover", "0"]
    _, cheap, _ = run([*spike, "--lambda-ms", "5"], capsys)
    step = steps(cheap, "milp")[8]
    assert float(step[3]) == pytest.approx(400 - float(step[2]), abs=0.05) and float(step[3]) > 200
    assert step[5] == "c5.large:spot x1"  # no instance launched for the spike
    _, dear, _ = run([*spike, "--lambda-ms", "900", "--lambda-concurrency", "1"], capsys)
    step = steps(dear, "milp")[8]
    assert float(step[3]) == 0 and float(step[2]) >= 400  # instances launched ahead of it instead
    first = steps(dear, "milp")[0]
    assert float(first[3]) == pytest.approx(1000 / 900, abs=0.05) and float(first[4]) > 98  # shown, not hidden
    assert "unserved: no instance can serve yet" in dear


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--demand", "1,x"], "comma-separated req/s"),
        (["--demand", "1,-2"], "finite req/s >= 0"),
        (["--demand", "10", "--fleet", "c9.large:spot"], "c9.large:spot is not a pool for mobilenet_v2"),
        (["--demand", "10", "--fleet", "c5.large:reserved"], "TYPE:on-demand|spot[:COUNT>=1]"),
        (["--demand", "10", "--spot-cover", "2"], "spot_cover must be in [0, 1]"),
        (["--demand", "10", "--lambda-memory-mb", "50"], "--lambda-memory-mb must be in 128..10240"),
    ],
)
def test_bad_input_is_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--model", "mobilenet_v2", *argv], capsys)
    assert code == 2 and message in err and out == ""
