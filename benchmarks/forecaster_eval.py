"""The forecaster's evaluation tables: Twitter's held-out last 4 days and NASA x100 with the same model.

    .venv/bin/python benchmarks/forecaster_eval.py [--model profiles/forecaster] [--write]

Runs exactly these commands (in-process) and prints their output; ``--write`` also writes it, with the
model's training record, to ``<model>/EVAL.md`` (keeping the leave-one-trace-out section that
``benchmarks/forecaster_loto.py --write`` puts there):

    mark forecast eval --trace ../shared/traces/twitter-2021-08/workload.txt --calibration static --markdown
    mark forecast eval --trace ../shared/traces/twitter-2021-08/workload.txt --calibration online --markdown
    mark forecast eval --trace ../shared/traces/nasa-1995/workload.tbz2 --scale 100 --calibration static --markdown
    mark forecast eval --trace ../shared/traces/nasa-1995/workload.tbz2 --scale 100 --calibration online --markdown

Needs ``../shared`` beside the checkout; says so and exits 0 without it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.cli.main import build_parser  # noqa: E402

TWITTER = "../shared/traces/twitter-2021-08/workload.txt"
NASA = "../shared/traces/nasa-1995/workload.tbz2"
LOTO_SECTION = "## Leave-one-trace-out (issue 14)"  # written by benchmarks/forecaster_loto.py --write
RUNS = (
    ("Twitter, last 4 days held out, calibration as fit at training", [TWITTER, "--calibration", "static"]),
    ("Twitter, last 4 days held out, online calibration", [TWITTER, "--calibration", "online"]),
    ("NASA x100, same model, nothing refit", [NASA, "--scale", "100", "--calibration", "static"]),
    ("NASA x100, same model, online calibration", [NASA, "--scale", "100", "--calibration", "online"]),
)


def run(trace_and_flags: list[str], model: str) -> tuple[str, str]:
    argv = ["forecast", "eval", "--trace", *trace_and_flags, "--markdown"]
    if model != str(ROOT / "profiles" / "forecaster"):
        argv += ["--model", model]
    args = build_parser().parse_args(argv)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = args.func(args)
    if code:
        raise SystemExit(f"mark {' '.join(argv)} failed ({code})")
    return "mark " + " ".join(argv), buf.getvalue()


def training_record(model: Path) -> str:
    spec = json.loads((model / "forecaster.json").read_text())
    t = spec["training"]
    size = sum(p.stat().st_size for p in model.iterdir() if p.suffix in (".onnx", ".npz", ".json"))
    sources = t.get("traces") or [{"source": t["trace"], "split_minutes": t["split_minutes"]}]
    lines = [f"- command: `{t['command']}`"]
    for r in sources:
        extra = f"; thinning {r['thinning']}, weight share {r['weight_share']}" if "thinning" in r else ""
        lines += [f"- data: {r['source']}", f"  - split (minute origins): {json.dumps(r['split_minutes'])}{extra}"]
    if "trace_weighting" in t:
        lines.append(f"- weighting: {t['trace_weighting']}")
    lines += [
        f"- seed {t['seed']}, trained {t['date']} in {t['wall_seconds']} s (torch {t['torch']}, 1 thread); LSTM best "
        f"epoch {t['lstm']['best_epoch']} of {t['lstm']['epochs_run']}; {spec['model']['parameters']} parameters",
        f"- model files: {size / 1024:.0f} KiB (model.onnx + qr.npz + forecaster.json)",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "profiles" / "forecaster"))
    ap.add_argument("--write", action="store_true", help="write <model>/EVAL.md")
    args = ap.parse_args()
    os.chdir(ROOT)  # the commands name ../shared relative to the checkout
    if not (ROOT.parent / "shared" / "traces").is_dir():
        print("skipped: ../shared/traces is absent (a fresh clone has no traces); nothing evaluated")
        return 0
    model = Path(args.model)
    parts = [
        "# Forecaster evaluation",
        "",
        "Produced by `.venv/bin/python benchmarks/forecaster_eval.py --write`, which runs the commands below.",
        "",
        "## Training record",
        "",
        training_record(model),
    ]
    for title, flags in RUNS:
        command, text = run(flags, args.model)
        print(f"## {title}\n\n`{command}`\n\n{text}", flush=True)
        parts += ["", f"## {title}", "", f"`{command}`", "", text.rstrip()]
    if args.write:
        old = (model / "EVAL.md").read_text() if (model / "EVAL.md").is_file() else ""
        kept = old[old.index(LOTO_SECTION) :] if LOTO_SECTION in old else ""  # forecaster_loto.py's section stays
        (model / "EVAL.md").write_text("\n".join(parts) + "\n" + ("\n" + kept if kept else ""))
        print(f"wrote {model / 'EVAL.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
