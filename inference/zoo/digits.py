"""The digits family: small real classifiers trained here on scikit-learn's bundled 8x8 digits.

Three variants of very different size (a linear model, a small and a large MLP) so that tests and
the local stack have a real accuracy/latency trade-off without torch or downloads. Training is
seeded, so the same build gives the same weights. The ONNX graph is written directly from the fitted
weights (Mul -> Gemm -> Relu ... -> Softmax): no converter dependency, and the scaling x/16 lives
inside the graph so clients send raw pixel intensities 0..16.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inference.cards import Accuracy, ModelCard
from inference.repository import ModelRepository
from inference.zoo.common import install_model, log

SEED = 0
TEST_FRACTION = 0.25
OPSET = 17


@dataclass(frozen=True)
class DigitsVariant:
    name: str
    hidden: tuple[int, ...]  # () = multinomial logistic regression


VARIANTS = (
    DigitsVariant("digits_linear", ()),
    DigitsVariant("digits_mlp_small", (32,)),
    DigitsVariant("digits_mlp_large", (256, 128)),
)
PREPROCESSING = "none: send raw 8x8 digit intensities 0..16 flattened to 64 FP32 values; the graph divides by 16"


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified train/test split of sklearn's digits (1797 images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=TEST_FRACTION, random_state=SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


def _fit(variant: DigitsVariant, x: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train and return (weights, biases) per layer, in the x/16 input scale."""
    if not variant.hidden:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(max_iter=2000, C=1.0, random_state=SEED).fit(x / 16.0, y)
        return [lr.coef_.T.astype(np.float32)], [lr.intercept_.astype(np.float32)]
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=variant.hidden, max_iter=300, random_state=SEED, alpha=1e-4)
    with warnings.catch_warnings():
        # Held-out accuracy is what we report; a not-quite-converged optimizer is fine and expected.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x / 16.0, y)
    return [w.astype(np.float32) for w in mlp.coefs_], [b.astype(np.float32) for b in mlp.intercepts_]


def to_onnx(weights: list[np.ndarray], biases: list[np.ndarray], name: str) -> onnx.ModelProto:
    """A dense ReLU network with a dynamic batch axis; the last layer ends in Softmax."""
    inits = [numpy_helper.from_array(np.array([1.0 / 16.0], dtype=np.float32), "scale")]
    nodes = [helper.make_node("Mul", ["input", "scale"], ["h0"])]
    cur = "h0"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"z{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out]))
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
            cur = f"h{i + 1}"
        else:
            cur = out
    nodes.append(helper.make_node("Softmax", [cur], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mark-zoo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _reference_probs(weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float64) / 16.0
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build(repo: ModelRepository, only: list[str] | None = None) -> list[ModelCard]:
    """Train, export, verify and install every digits variant (or those in ``only``)."""
    from inference.runtime import OnnxModel

    wanted = [v for v in VARIANTS if only is None or v.name in only]
    x_train, x_test, y_train, y_test = load_split()
    cards = []
    for v in wanted:
        t0 = time.perf_counter()
        log(f"{v.name}: training hidden={list(v.hidden) or 'none (logistic regression)'} on {len(x_train)} images")
        weights, biases = _fit(v, x_train, y_train)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            onnx.save(to_onnx(weights, biases, v.name), str(path))
            probs = OnnxModel(path).run({"input": x_test})["probabilities"]
            max_diff = float(np.abs(probs - _reference_probs(weights, biases, x_test)).max())
            if max_diff > 1e-4:
                raise RuntimeError(f"{v.name}: ONNX output differs from the trained weights by {max_diff:.2e}")
            acc = float((probs.argmax(axis=1) == y_test).mean())
            card = install_model(
                repo,
                v.name,
                path,
                family="digits",
                preprocessing=PREPROCESSING,
                accuracy=[
                    Accuracy(
                        "top1",
                        round(acc, 4),
                        "measured",
                        f"sklearn digits, held-out stratified {TEST_FRACTION:.0%} split (random_state={SEED}), "
                        f"n={len(y_test)}",
                    )
                ],
                verification={"max_abs_diff_vs_numpy": max_diff, "test_samples": len(y_test)},
                notes=f"hidden layers {list(v.hidden)}; parameters {sum(w.size for w in weights + biases)}",
            )
        log(f"{v.name}: top-1 {acc:.3f} on held-out, max abs diff {max_diff:.1e}, {time.perf_counter() - t0:.1f}s")
        cards.append(card)
    return cards
