"""Latency profiles per (model, instance type): slots per physical core, honest provenance, GPU estimates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.economics.catalog import UnknownInstanceTypeError, load_catalog
from orchestrator.economics.latency_profiles import (
    LATENCY_DIR,
    ProfileError,
    UnknownModelError,
    UnsupportedOnTypeError,
    known_models,
    model_family,
    profile_for,
)

CATALOG = load_catalog()
IMAGENET = ["efficientnet_lite0", "efficientnet_lite0_int8", "efficientnet_lite1", "efficientnet_lite2"]
IMAGENET += ["mobilenet_v2", "mobilenet_v2_int8"]


def test_committed_profiles_cover_both_families() -> None:
    assert set(known_models()) == {"digits_linear", "digits_mlp_small", "digits_mlp_large", *IMAGENET}
    assert [m for m in known_models() if model_family(m) == "imagenet"] == sorted(IMAGENET)


@pytest.mark.parametrize(
    "instance_type,slots", [("c5.large", 1), ("c5.xlarge", 2), ("c5.2xlarge", 4), ("c5.4xlarge", 8)]
)
def test_cpu_types_get_one_single_thread_slot_per_physical_core(instance_type: str, slots: int) -> None:
    p = profile_for("mobilenet_v2", instance_type, CATALOG)
    assert (p.slots, p.threads_per_slot) == (slots, 1)
    measured = json.loads((LATENCY_DIR / "mobilenet_v2" / "amd-epyc-2c-t1.json").read_text())
    assert p.batches == tuple((r["batch_size"], r["p50_ms"], r["p99_ms"]) for r in measured["batches"])
    # Measured on this development machine, so for any EC2 type an estimate, and it says so.
    assert p.source == "estimated"
    assert "amd-epyc-2c-t1.json" in p.method and "No CPU-generation speed factor" in p.method
    assert "AMD EPYC" in p.measured_on and measured["measured_at"] in p.measured_on


def test_cpu_families_are_treated_alike() -> None:
    c5, m5, c6i = (profile_for("efficientnet_lite0", t, CATALOG) for t in ("c5.large", "m5.large", "c6i.large"))
    assert c5.batches == m5.batches == c6i.batches


def test_profile_is_measured_only_on_the_type_it_was_measured_on(tmp_path: Path) -> None:
    root = tmp_path / "latency"
    shutil.copytree(LATENCY_DIR / "mobilenet_v2", root / "mobilenet_v2")
    path = root / "mobilenet_v2" / "amd-epyc-2c-t1.json"
    data = json.loads(path.read_text())
    data["host"]["instance_type"] = "c5.large"
    path.write_text(json.dumps(data))
    assert profile_for("mobilenet_v2", "c5.large", CATALOG, root).source == "measured"
    assert profile_for("mobilenet_v2", "c6i.large", CATALOG, root).source == "estimated"


def test_falls_back_to_a_multi_slot_single_thread_measurement(tmp_path: Path) -> None:
    root = tmp_path / "latency"
    (root / "mobilenet_v2").mkdir(parents=True)
    shutil.copy(LATENCY_DIR / "mobilenet_v2" / "amd-epyc-2c-s2-t1.json", root / "mobilenet_v2")
    shutil.copy(LATENCY_DIR / "mobilenet_v2" / "amd-epyc-2c-t2.json", root / "mobilenet_v2")
    p = profile_for("mobilenet_v2", "c5.xlarge", CATALOG, root)
    assert "amd-epyc-2c-s2-t1.json" in p.method and "2 slots of 1 thread running at once" in p.method


def test_no_single_thread_measurement_is_an_error_that_says_what_to_run(tmp_path: Path) -> None:
    root = tmp_path / "latency"
    (root / "mobilenet_v2").mkdir(parents=True)
    shutil.copy(LATENCY_DIR / "mobilenet_v2" / "amd-epyc-2c-t2.json", root / "mobilenet_v2")
    with pytest.raises(ProfileError, match="--threads 1"):
        profile_for("mobilenet_v2", "c5.large", CATALOG, root)


@pytest.mark.parametrize("instance_type", ["g4dn.xlarge", "g5.xlarge", "p3.2xlarge"])
def test_gpu_profiles_are_datasheet_estimates(instance_type: str) -> None:
    p = profile_for("mobilenet_v2", instance_type, CATALOG)
    assert p.source == "estimated" and p.slots == 1
    assert "no GPU measured" in p.method and "gpu_estimates.yaml" in p.method
    sizes = [b for b, _, _ in p.batches]
    p50 = [t for _, t, _ in p.batches]
    assert sizes == [1, 2, 4, 8, 16, 32, 64]
    per_image = [(p50[i + 1] - p50[i]) / (sizes[i + 1] - sizes[i]) for i in range(len(sizes) - 1)]
    assert max(per_image) == pytest.approx(min(per_image), rel=1e-3)  # T(b) = fixed + b x per-image
    assert all(p99 == pytest.approx(1.25 * t, rel=1e-3) for _, t, p99 in p.batches)


def test_gpu_estimates_follow_the_datasheets() -> None:
    t4, a10g, v100 = (profile_for("efficientnet_lite2", t, CATALOG) for t in ("g4dn.xlarge", "g5.xlarge", "p3.2xlarge"))
    # Compute-bound at b = 64: time per image scales with 1 / FP32 peak (8.1, 31.2, 15.7 TFLOPS).
    assert t4.batches[-1][1] > v100.batches[-1][1] > a10g.batches[-1][1]
    # MobileNetV2 T4 at b = 1: 1.1 ms fixed + 0.51 ms per image (2 x 300M MACs at 15% of 8.1 TFLOPS + PCIe).
    assert profile_for("mobilenet_v2", "g4dn.xlarge", CATALOG).batches[0][1] == pytest.approx(1.61, abs=0.02)


@pytest.mark.parametrize("model", ["mobilenet_v2_int8", "efficientnet_lite0_int8"])
def test_int8_variants_are_refused_on_gpus_and_served_on_cpus(model: str) -> None:
    with pytest.raises(UnsupportedOnTypeError, match="ConvInteger") as e:
        profile_for(model, "g4dn.xlarge", CATALOG)
    assert e.value.instance_type == "g4dn.xlarge" and "NVIDIA T4" in e.value.reason
    assert profile_for(model, "c5.large", CATALOG).batches


def test_unknown_model_and_type_list_what_is_known() -> None:
    with pytest.raises(UnknownModelError, match="resnet50") as e:
        profile_for("resnet50", "c5.large", CATALOG)
    assert "mobilenet_v2" in str(e.value) and isinstance(e.value, KeyError)
    with pytest.raises(UnknownInstanceTypeError, match="c7.huge") as e2:
        profile_for("mobilenet_v2", "c7.huge", CATALOG)
    assert "g5.xlarge" in str(e2.value)


def test_service_view_is_what_the_batching_policy_needs() -> None:
    p = profile_for("mobilenet_v2", "c5.2xlarge", CATALOG)
    assert p.service.slots == 4 and p.service.batches == p.batches
