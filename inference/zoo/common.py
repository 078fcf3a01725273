"""What every zoo builder shares: writing a model + card atomically, and progress output."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx

from inference.cards import MODEL_FILE, Accuracy, ModelCard, TensorSpec, file_digest
from inference.repository import ModelRepository


def log(msg: str) -> None:
    """Progress goes to stderr so that stdout stays machine-readable."""
    print(f"[zoo] {msg}", file=sys.stderr, flush=True)


def specs_from_onnx(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Read the graph's signature (dynamic axes become -1), so cards never disagree with the file."""
    from inference.runtime import OnnxModel

    m = OnnxModel(path)
    return (
        tuple(TensorSpec(s.name, s.datatype, s.shape) for s in m.inputs),
        tuple(TensorSpec(s.name, s.datatype, s.shape) for s in m.outputs),
    )


def install_model(
    repo: ModelRepository,
    name: str,
    onnx_file: Path,
    *,
    family: str,
    preprocessing: str,
    accuracy: list[Accuracy],
    optimization: str = "none",
    verification: dict[str, Any] | None = None,
    notes: str = "",
) -> ModelCard:
    """Move ``onnx_file`` into ``<repo>/<name>/`` with its card; a half-built model is never visible.

    The folder is assembled under a temporary name and renamed into place, so a crash or Ctrl-C
    mid-build leaves the previous version (or nothing), never a model without a card.
    """
    onnx.checker.check_model(str(onnx_file))
    inputs, outputs = specs_from_onnx(onnx_file)
    final = repo.model_dir(name)
    repo.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo.root))
    try:
        shutil.move(str(onnx_file), staging / MODEL_FILE)
        size, sha = file_digest(staging / MODEL_FILE)
        opset = onnx.load(str(staging / MODEL_FILE), load_external_data=False).opset_import[0].version
        card = ModelCard(
            name=name,
            family=family,
            version="1",
            framework=f"onnx (opset {opset})",
            inputs=inputs,
            outputs=outputs,
            preprocessing=preprocessing,
            accuracy=tuple(accuracy),
            file_bytes=size,
            sha256=sha,
            optimization=optimization,
            verification=verification or {},
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            notes=notes,
        )
        card.write(staging)
        if final.exists():
            old = final.with_name(f".{name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
        return card
    finally:
        shutil.rmtree(staging, ignore_errors=True)
