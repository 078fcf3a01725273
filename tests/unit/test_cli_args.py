"""Command-line values refused before any work starts, each naming its flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--seconds", "0"], "argument --seconds: must be a whole number >= 1, got '0'"),
        (["run", "--scale", "-1"], "argument --scale: must be a number > 0, got '-1'"),
        (
            ["zoo", "build", "--only", "nosuch"],
            "--only: 'nosuch' is not a variant of digits; choose from digits_linear",
        ),
        (["zoo", "build", "digits", "--only", "mobilenet_v2"], "'mobilenet_v2' is not a variant of digits"),
    ],
)
def test_bad_values_are_refused_before_anything_is_built(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--repo", str(tmp_path / "repo"), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["forecast", "eval", "--trace", "t.txt", "--horizons", "16"],
            "argument --horizons: must be whole minutes 1..15",
        ),
        (
            ["forecast", "eval", "--trace", "t.txt", "--horizons", "0,5"],
            "argument --horizons: must be whole minutes 1..15",
        ),
        (["forecast", "eval", "--trace", "t.txt", "--horizons", "abc"], "argument --horizons: must be whole minutes"),
        (["forecast", "eval", "--trace", "t.txt", "--test-days", "-1"], "argument --test-days/--last-days: must be"),
        (["forecast", "eval", "--trace", "t.txt", "--val-days", "0"], "argument --val-days: must be a number > 0"),
        (["forecast", "eval", "--trace", "t.txt", "--gamma", "-1"], "argument --gamma: must be a number > 0"),
        (["forecast", "train", "--synthetic", "diurnal:12", "--out", "m", "--promote-to", "a"], "give --from-history"),
    ],
)
def test_forecast_arguments_are_refused_before_any_work(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # nothing trained, nothing written
