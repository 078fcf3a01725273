"""Latency profile per (model variant, instance type): T(b) p50/p99 per slot, slots, and where it came from.

The capacity model is only as good as T(b), and no EC2 type is at hand here, so every profile says
how it was obtained (DESIGN.md §3 "Never pass an estimate off as a measurement"):

- CPU types: a type with P physical cores (vCPU // 2: EC2 vCPUs are hyperthreads) runs P slots of one
  onnxruntime thread each, and each slot's T(b) is the single-thread curve measured on the machine
  that wrote ``profiles/latency/MODEL/<host>-t1.json`` (or, failing that, ``<host>-s<N>-t1.json``:
  one thread per slot with N slots busy at once). That is a measurement of *that* machine, so for an
  EC2 type it is an estimate, unless the profile's ``host.instance_type`` names the very type.
- GPU types: no GPU here. T(b) = fixed per-batch overhead + b x per-image time, from datasheet peak
  FP32 throughput, the host link, the model's multiply-accumulates and stated assumptions, all in
  ``profiles/gpu_estimates.yaml``. Dynamically quantized (int8) variants are refused on GPUs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from orchestrator.economics.catalog import Catalog
from orchestrator.policy.batching import ServiceProfile

PROFILES_ROOT = Path(__file__).resolve().parents[2] / "profiles"
LATENCY_DIR = PROFILES_ROOT / "latency"
GPU_ESTIMATES = PROFILES_ROOT / "gpu_estimates.yaml"

Source = Literal["measured", "estimated"]
_LAYOUT = re.compile(r"^(?P<host>.+?)-(?:s(?P<slots>\d+)-)?t(?P<threads>\d+)\.json$")


class ProfileError(ValueError):
    """A profile that cannot be built; the message names the model/type and what is known."""


class UnknownModelError(ProfileError, KeyError):
    """No latency profile for this model (a ValueError that also reads as a KeyError)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedOnTypeError(ProfileError):
    """The model cannot be served on this instance type (e.g. an int8 graph on a GPU); ``reason`` says why."""

    def __init__(self, model: str, instance_type: str, reason: str) -> None:
        super().__init__(f"{model} on {instance_type}: not estimated: {reason}")
        self.model, self.instance_type, self.reason = model, instance_type, reason


@dataclass(frozen=True)
class TypeProfile:
    """T(b) per slot for one model on one instance type, with its provenance."""

    model: str
    instance_type: str
    slots: int
    threads_per_slot: int
    batches: tuple[tuple[int, float, float], ...]  # (batch_size, p50_ms, p99_ms)
    source: Source
    method: str  # how the figures were obtained or derived, naming the file they came from
    measured_on: str  # the machine and date of the underlying measurement or data

    @property
    def service(self) -> ServiceProfile:
        """The pure batching policy's view: batches and slots only."""
        return ServiceProfile(self.batches, self.slots)


def known_models(profiles_dir: Path | None = None) -> list[str]:
    """Models with at least one measured CPU profile file."""
    root = profiles_dir or LATENCY_DIR
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any(_LAYOUT.match(f.name) for f in d.iterdir()))


def model_family(model: str, profiles_dir: Path | None = None) -> str | None:
    """The ``family`` recorded in the model's profile files (e.g. 'imagenet'), if any."""
    for path in sorted(_model_dir(model, profiles_dir).glob("*.json")):
        fam = _read_json(path).get("family")
        if isinstance(fam, str):
            return fam
    return None


def profile_for(
    model: str,
    instance_type: str,
    catalog: Catalog,
    profiles_dir: Path | None = None,
    gpu_estimates: Path | None = None,
) -> TypeProfile:
    """The latency profile of ``model`` on ``instance_type`` (see the module docstring for how)."""
    spec = catalog.instance(instance_type)  # raises UnknownInstanceTypeError listing the known types
    _model_dir(model, profiles_dir)  # raises UnknownModelError listing the known models
    if spec.gpu is not None:
        return _gpu_profile(model, instance_type, spec.gpu.model, spec.gpu.count, gpu_estimates or GPU_ESTIMATES)
    return _cpu_profile(model, instance_type, spec.vcpu, profiles_dir)


# --- CPU -----------------------------------------------------------------------------------------


def _model_dir(model: str, profiles_dir: Path | None) -> Path:
    root = profiles_dir or LATENCY_DIR
    d = root / model
    if not d.is_dir() or not any(_LAYOUT.match(f.name) for f in d.iterdir()):
        known = known_models(profiles_dir)
        raise UnknownModelError(
            f"unknown model {model!r}: no latency profile under {root}; known models: {', '.join(known) or 'none'}"
        )
    return d


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ProfileError(f"cannot read latency profile {path}: {e}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a latency profile must be a JSON object")
    return data


def _batches(path: Path, data: dict[str, Any]) -> tuple[tuple[int, float, float], ...]:
    rows = data.get("batches")
    if not isinstance(rows, list) or not rows:
        raise ProfileError(f"{path}: 'batches' must be a non-empty list")
    out = []
    for i, r in enumerate(rows):
        try:
            b, p50, p99 = int(r["batch_size"]), float(r["p50_ms"]), float(r["p99_ms"])
        except (KeyError, TypeError, ValueError):
            raise ProfileError(f"{path}: batches[{i}] needs batch_size, p50_ms and p99_ms") from None
        if b < 1 or not (math.isfinite(p50) and p50 > 0 and math.isfinite(p99) and p99 > 0):
            raise ProfileError(f"{path}: batches[{i}] has a non-positive size or time: {r}")
        out.append((b, p50, max(p50, p99)))  # a p99 below p50 is sampling noise on tiny models
    out.sort()
    return tuple(out)


def _single_thread_file(model: str, profiles_dir: Path | None) -> tuple[Path, dict[str, Any], int]:
    """The preferred one-thread-per-slot measurement: t1 (one slot) first, then sN-t1; newest wins."""
    found: list[tuple[int, str, Path, dict[str, Any], int]] = []
    for path in sorted(_model_dir(model, profiles_dir).glob("*.json")):
        m = _LAYOUT.match(path.name)
        if not m or int(m["threads"]) != 1:
            continue
        data = _read_json(path)
        slots = int(m["slots"] or 1)
        found.append((0 if slots == 1 else 1, str(data.get("measured_at", "")), path, data, slots))
    if not found:
        layouts = ", ".join(p.name for p in sorted(_model_dir(model, profiles_dir).glob("*.json")))
        raise ProfileError(
            f"model {model!r} has no single-thread latency profile (need <host>-t1.json or <host>-s<N>-t1.json; "
            f"found: {layouts}); measure one with `mark profile {model} --threads 1`"
        )
    preferred = min(x[0] for x in found)
    _, _, path, data, slots = max((x for x in found if x[0] == preferred), key=lambda x: (x[1], str(x[2])))
    return path, data, slots


def single_thread_batches(model: str, profiles_dir: Path | None = None) -> tuple[tuple[int, float, float], ...]:
    """This machine's measured one-thread (batch size, p50 ms, p99 ms) curve of ``model``: what one
    Lambda environment of about one vCPU does with one request."""
    path, data, _ = _single_thread_file(model, profiles_dir)
    return _batches(path, data)


def layout_batches(
    model: str, threads: int, slots: int = 1, profiles_dir: Path | None = None
) -> tuple[tuple[int, float, float], ...]:
    """This machine's measured (batch size, p50 ms, p99 ms) curve of ``model`` in one worker layout
    (``slots`` batches at once of ``threads`` onnxruntime threads each): what a local instance
    started that way does, for the front door's completion predictions. Newest measurement wins.

    Raises:
        UnknownModelError: no profile at all for ``model``.
        ProfileError: none for this layout, naming the file pattern it looked for and how to measure
            one (never a guess).
    """
    d = _model_dir(model, profiles_dir)
    found = []
    for path in sorted(d.glob("*.json")):
        m = _LAYOUT.match(path.name)
        if m and int(m["threads"]) == threads and int(m["slots"] or 1) == slots:
            data = _read_json(path)
            found.append((str(data.get("measured_at", "")), path, data))
    if not found:
        pattern = f"<host>-t{threads}.json" if slots == 1 else f"<host>-s{slots}-t{threads}.json"
        raise ProfileError(
            f"model {model!r} has no latency profile for {slots} slot(s) x {threads} thread(s): looked for "
            f"{_where(d)}/{pattern}; measure it with `mark profile {model} --threads {threads} --slots {slots}`"
        )
    _, path, data = max(found, key=lambda x: (x[0], str(x[1])))
    return _batches(path, data)


def _where(path: Path) -> str:
    try:
        return str(path.relative_to(PROFILES_ROOT.parent))
    except ValueError:
        return str(path)


def _cpu_profile(model: str, instance_type: str, vcpu: int, profiles_dir: Path | None) -> TypeProfile:
    path, data, measured_slots = _single_thread_file(model, profiles_dir)
    host = data.get("host") or {}
    cores = max(1, vcpu // 2)
    on = (
        f"{host.get('cpu_model', 'unknown CPU')}, {host.get('logical_cores', '?')} logical cores, "
        f"onnxruntime {data.get('onnxruntime_version', '?')}, {data.get('measured_at', 'undated')} ({_where(path)})"
    )
    layout = (
        "one slot of 1 thread"
        if measured_slots == 1
        else f"{measured_slots} slots of 1 thread running at once, i.e. with the neighbouring cores busy"
    )
    if host.get("instance_type") == instance_type:
        return TypeProfile(
            model,
            instance_type,
            cores,
            1,
            _batches(path, data),
            "measured",
            f"measured on {instance_type} itself by `mark profile` ({layout}); {cores} slots x 1 thread",
            on,
        )
    method = (
        f"estimated: {instance_type} has {vcpu} vCPUs = {cores} physical core{'s' * (cores != 1)} (EC2 vCPUs are "
        f"hyperthreads), so {cores} parallel slot{'s' * (cores != 1)} of 1 onnxruntime thread; T(b) per slot = the "
        f"single-thread curve measured on this development machine ({layout}; {_where(path)}), not on {instance_type}. "
        "No CPU-generation speed factor is applied: c5, m5 and c6i are treated alike"
    )
    return TypeProfile(model, instance_type, cores, 1, _batches(path, data), "estimated", method, on)


# --- GPU -----------------------------------------------------------------------------------------


def _load_gpu_estimates(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"cannot read GPU estimate inputs {path}: {e}") from None
    if not isinstance(data, dict) or not all(k in data for k in ("assumptions", "gpus", "models")):
        raise ProfileError(f"{path}: needs 'assumptions', 'gpus' and 'models' mappings")
    return data


def _gpu_profile(model: str, instance_type: str, gpu_model: str, gpu_count: int, path: Path) -> TypeProfile:
    data = _load_gpu_estimates(path)
    refused = (data.get("unsupported_on_gpu") or {}).get(model)
    if refused:
        raise UnsupportedOnTypeError(model, instance_type, f"{gpu_model}: {refused}")
    gpu = data["gpus"].get(gpu_model)
    if gpu is None:
        raise ProfileError(
            f"{instance_type}: no datasheet figures for GPU {gpu_model!r} in {path}; known: {', '.join(data['gpus'])}"
        )
    mod = data["models"].get(model)
    if mod is None:
        raise ProfileError(
            f"{model} on {instance_type}: no GPU estimate inputs (MACs, graph nodes, I/O bytes) in {path}; "
            f"known: {', '.join(data['models'])}"
        )
    a = {k: v["value"] if isinstance(v, dict) else v for k, v in data["assumptions"].items()}
    fixed_ms = a["run_overhead_ms"] + mod["graph_nodes"] * a["kernel_us"] / 1000 + 2 * a["copy_latency_us"] / 1000
    link_bytes_per_ms = gpu["link_gb_per_s"] * 1e9 * a["link_efficiency"] / 1000
    copy_ms = (mod["input_bytes_per_image"] + mod["output_bytes_per_image"]) / link_bytes_per_ms
    compute_ms = 2 * mod["macs_per_image"] / (gpu["fp32_tflops"] * 1e12 * a["efficiency"]) * 1000
    per_image_ms = copy_ms + compute_ms
    jitter = a["p99_over_p50"]
    batches = tuple(
        (b, round(fixed_ms + b * per_image_ms, 4), round((fixed_ms + b * per_image_ms) * jitter, 4))
        for b in a["batch_sizes"]
    )
    method = (
        f"estimated (no GPU measured): T(b) = {fixed_ms:.3f} ms fixed per batch (Run() {a['run_overhead_ms']} ms + "
        f"{mod['graph_nodes']} graph nodes x {a['kernel_us']} us launch + 2 copies x {a['copy_latency_us']} us) + b x "
        f"{per_image_ms:.4f} ms per image (compute: 2 x {mod['macs_per_image']:.4g} MACs / "
        f"({gpu['fp32_tflops']} TFLOPS FP32 peak x efficiency {a['efficiency']}); copy: {mod['input_bytes_per_image']}+"
        f"{mod['output_bytes_per_image']} bytes over {gpu['link']} at {a['link_efficiency']:.0%} of "
        f"{gpu['link_gb_per_s']} GB/s); p99 = p50 x {jitter}; one onnxruntime CUDA session per GPU; inputs and "
        f"sources in {_where(path)}"
    )
    on = f"{gpu_model} datasheet figures ({gpu['fp32_source']}); model figures: {mod['macs_source']}"
    return TypeProfile(model, instance_type, gpu_count, 1, batches, "estimated", method, on)
