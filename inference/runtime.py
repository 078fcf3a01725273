"""ONNX Runtime session wrapper: thread settings, input checking against the model's signature.

One ``OnnxModel`` is one session. The worker runs one batch at a time per session, so intra-op
threads are the knob (an instance type maps to a thread count); inter-op parallelism stays at 1
because these graphs are sequential and extra pools only steal cores from the HTTP loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.errors import ModelFailed

# ONNX Runtime type strings -> KServe v2 datatypes and numpy dtypes.
ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


@dataclass(frozen=True)
class IOSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 where dynamic


def _spec(node: ort.NodeArg) -> IOSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return IOSpec(name=node.name, datatype=ORT_TO_V2.get(node.type, node.type), shape=shape)


class OnnxModel:
    """A loaded ONNX model. ``run`` takes arrays already checked against the model card (inference/v2.py)."""

    def __init__(
        self,
        path: Path | str,
        *,
        intra_op_threads: int = 1,
        providers: Sequence[str] | None = None,
        spin: bool = True,
    ) -> None:
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        if not spin:  # idle pool threads otherwise busy-wait, taking cores from co-located processes
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        self.path = Path(path)
        self.intra_op_threads = intra_op_threads
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        self.providers = tuple(self.session.get_providers())
        self.inputs = tuple(_spec(n) for n in self.session.get_inputs())
        self.outputs = tuple(_spec(n) for n in self.session.get_outputs())
        self._input_by_name = {s.name: s for s in self.inputs}

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(None, dict(arrays))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelFailed(f"model execution failed: {type(e).__name__}: {e}") from e
        return {spec.name: np.asarray(r) for spec, r in zip(self.outputs, results, strict=True)}
