"""Model cards: what a variant takes and returns, how accurate it is and where that figure comes from.

A card sits beside each ONNX file in the model repository (``<repo>/<name>/card.json``). The
orchestrator's variant selection reads accuracy from here, so every figure carries its source:
``measured`` (on what data, how many samples) or ``published`` (where).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``-1`` in ``shape`` is a dynamic axis (always the batch axis first)."""

    name: str
    datatype: str  # KServe v2 datatype, e.g. FP32
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(name=str(d["name"]), datatype=str(d["datatype"]), shape=tuple(int(x) for x in d["shape"]))


@dataclass(frozen=True)
class Accuracy:
    """An accuracy figure and its provenance; ``source`` is ``measured`` or ``published``."""

    metric: str  # e.g. top1
    value: float  # fraction in [0, 1]
    source: str
    how: str  # measured: data set, split, sample count; published: where

    def __post_init__(self) -> None:
        if self.source not in ("measured", "published"):
            raise ValueError(f"accuracy source must be 'measured' or 'published', got {self.source!r}")
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"accuracy value must be a fraction in [0, 1], got {self.value}")


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    version: str
    framework: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: str
    accuracy: tuple[Accuracy, ...]
    file_bytes: int
    sha256: str
    optimization: str = "none"  # e.g. "int8-dynamic" for quantized variants
    verification: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    notes: str = ""

    @property
    def primary_accuracy(self) -> float:
        """The accuracy to plan with: the published figure when there is one, else the measured one."""
        published = [a for a in self.accuracy if a.source == "published"]
        return (published or list(self.accuracy))[0].value if self.accuracy else 0.0

    def kserve_metadata(self, version: str = "1") -> dict[str, Any]:
        """The KServe v2 model metadata answer (``GET /v2/models/{name}``)."""
        return {
            "name": self.name,
            "versions": [version],
            "platform": PLATFORM,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    def triton_config(self, max_batch_size: int, batch_timeout_ms: float) -> dict[str, Any]:
        """Triton's model configuration (``GET /v2/models/{name}/config``), which Triton tools such as
        perf_analyzer read to learn the batch axis: dims leave out the batch axis, as Triton's do."""

        def tensor(t: TensorSpec) -> dict[str, Any]:
            dtype = "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}"
            return {"name": t.name, "data_type": dtype, "dims": list(t.shape[1:])}

        return {
            "name": self.name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "max_batch_size": max_batch_size,
            "input": [tensor(t) for t in self.inputs],
            "output": [tensor(t) for t in self.outputs],
            "dynamic_batching": {"max_queue_delay_microseconds": round(batch_timeout_ms * 1000)},
        }

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [t.to_json() for t in self.inputs]
        d["outputs"] = [t.to_json() for t in self.outputs]
        d["accuracy"] = [asdict(a) for a in self.accuracy]
        d["file"] = {"name": MODEL_FILE, "bytes": d.pop("file_bytes"), "sha256": d.pop("sha256")}
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> ModelCard:
        try:
            return ModelCard(
                name=str(d["name"]),
                family=str(d["family"]),
                version=str(d.get("version", "1")),
                framework=str(d["framework"]),
                inputs=tuple(TensorSpec.from_json(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_json(t) for t in d["outputs"]),
                preprocessing=str(d["preprocessing"]),
                accuracy=tuple(Accuracy(**a) for a in d["accuracy"]),
                file_bytes=int(d["file"]["bytes"]),
                sha256=str(d["file"]["sha256"]),
                optimization=str(d.get("optimization", "none")),
                verification=dict(d.get("verification", {})),
                created_at=str(d.get("created_at", "")),
                notes=str(d.get("notes", "")),
            )
        except KeyError as e:
            raise ValueError(f"model card is missing field {e.args[0]!r}") from None

    def write(self, model_dir: Path) -> Path:
        path = model_dir / CARD_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @staticmethod
    def read(model_dir: Path) -> ModelCard:
        path = model_dir / CARD_FILE
        try:
            return ModelCard.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"no model card at {path}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"model card {path} is not valid JSON: {e}") from None


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, streamed so large models don't load into memory."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
