"""The layers of DESIGN.md §6, checked on the source (every import, at module level or in a function).

- ``inference``, ``ec2_worker`` and ``lambda_fn`` never import ``orchestrator`` (the Lambda bundle and
  the worker image must not pull it in);
- ``orchestrator.policy`` is pure: it imports only the standard library's pure parts, numpy/scipy/
  highspy, ``orchestrator.types`` and other policy modules — no mechanism (cloud, frontdoor,
  runtime, cli, economics, …), no I/O, clock or process modules;
- ``predictor``'s run time never imports torch (only training does);
- inside ``orchestrator``, the layers of DESIGN.md §6: ``cli`` > ``runtime`` > {``controller``, ``sim``,
  ``frontdoor``, ``cloud``, ``workload``} > ``config`` > ``economics`` > ``policy`` > {``types``,
  ``clock``}: a module imports only its own layer and those below.

Each rule is also run on a made-up violation, so the test is shown to fail when a rule is broken.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Modules a pure policy may not import: I/O, time, processes, networking, randomness without a seed.
IMPURE = {
    "os",
    "sys",
    "time",
    "datetime",
    "subprocess",
    "socket",
    "asyncio",
    "threading",
    "random",
    "pathlib",
    "shutil",
    "tempfile",
    "httpx",
    "boto3",
    "botocore",
    "uvicorn",
    "fastapi",
}
POLICY_MAY_IMPORT_FROM_ORCHESTRATOR = ("orchestrator.policy", "orchestrator.types")
TRAINING_ONLY = {"predictor/train.py", "predictor/lstm.py"}  # training and export: torch allowed


# DESIGN.md §6: each top-level part of orchestrator/ and its layer (higher may import lower, not back).
LAYER = {
    "__init__": 0,
    "types": 0,
    "clock": 0,
    "policy": 1,
    "economics": 2,
    "config": 3,
    "controller": 4,
    "sim": 4,
    "frontdoor": 4,
    "cloud": 4,
    "workload": 4,
    "runtime": 5,
    "cli": 6,
    "__main__": 7,
}


def layer_of(path: str) -> int:
    """The layer of a file under orchestrator/ (KeyError for a top-level part with no layer: add it)."""
    return LAYER[path.split("/")[1].removesuffix(".py")]


def imports(source: str) -> Iterator[str]:
    """Every module an import statement names (``from a.b import c`` gives ``a.b``; relative: ``.``)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


def violations(files: Iterable[tuple[str, str]], rule: str) -> list[str]:
    """``(path, source)`` pairs that break ``rule``, as 'path imports module' lines."""
    out = []
    for path, source in files:
        for module in imports(source):
            top = module.split(".")[0]
            if rule == "no-orchestrator" and top == "orchestrator":
                out.append(f"{path} imports {module}")
            elif rule == "pure-policy" and (
                (top == "orchestrator" and not module.startswith(POLICY_MAY_IMPORT_FROM_ORCHESTRATOR))
                or top in IMPURE
                or module.startswith(".")
            ):
                out.append(f"{path} imports {module}")
            elif rule == "no-torch" and top == "torch":
                out.append(f"{path} imports {module}")
            elif (
                rule == "layers"
                and top == "orchestrator"
                and "." in module
                and LAYER[module.split(".")[1]] > layer_of(path)
            ):
                out.append(f"{path} imports {module}")
    return out


def sources(*folders: str, skip: set[str] | None = None) -> list[tuple[str, str]]:
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in (skip or set()):
                found.append((rel, path.read_text()))
    return found


def test_serving_packages_never_import_orchestrator() -> None:
    files = sources("inference", "ec2_worker", "lambda_fn")
    assert len(files) > 15
    assert violations(files, "no-orchestrator") == []


def test_policies_are_pure() -> None:
    files = sources("orchestrator/policy")
    assert any(p.endswith("planning/milp.py") for p, _ in files)
    assert violations(files, "pure-policy") == []


def test_orchestrator_layers_only_import_downwards() -> None:
    files = sources("orchestrator")
    assert {p.split("/")[1].removesuffix(".py") for p, _ in files} <= set(LAYER)  # every part has a layer
    assert violations(files, "layers") == []


def test_the_forecaster_run_time_never_imports_torch() -> None:
    files = sources("predictor", skip=TRAINING_ONLY)
    assert violations(files, "no-torch") == []
    # and the run-time modules never import the training ones (which would bring torch in)
    training = {p.removesuffix(".py").replace("/", ".") for p in TRAINING_ONLY}
    assert [f"{p} imports {m}" for p, src in files for m in imports(src) if m in training] == []


@pytest.mark.parametrize(
    ("rule", "source", "culprit"),
    [
        ("no-orchestrator", "def f():\n    from orchestrator.economics import catalog\n", "orchestrator.economics"),
        ("pure-policy", "from orchestrator.cloud.base import Cloud\n", "orchestrator.cloud.base"),
        ("pure-policy", "import time\n", "time"),
        ("pure-policy", "from orchestrator.frontdoor import dispatcher\n", "orchestrator.frontdoor"),
        ("no-torch", "import torch.nn as nn\n", "torch.nn"),
        ("layers", "from orchestrator.frontdoor.dispatcher import Dispatcher\n", "orchestrator.frontdoor.dispatcher"),
        ("layers", "def f():\n    import orchestrator.runtime.session\n", "orchestrator.runtime.session"),
        ("layers", "from orchestrator.config import DeploymentConfig\n", "orchestrator.config"),
    ],
)
def test_each_rule_fails_on_a_violation(rule: str, source: str, culprit: str) -> None:
    path = "orchestrator/economics/made_up.py" if rule == "layers" else "made_up.py"
    assert violations([(path, source)], rule) == [f"{path} imports {culprit}"]


def test_client_side_imagenet_preprocessing_never_loads_torch() -> None:
    """A client preparing images (or the model-less layer reading the variant list) must not need the
    zoo extra: importing the variants module leaves torch unloaded."""
    import subprocess
    import sys

    code = (
        "import sys, inference.zoo.imagenet_variants as v; "
        "assert 'torch' not in sys.modules, 'torch loaded'; print(len(v.VARIANTS))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "6", out.stderr
