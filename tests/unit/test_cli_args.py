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
