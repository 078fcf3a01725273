"""Model repository (name validation, no path escape), model cards, and the digits family build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.cards import Accuracy, ModelCard, file_digest
from inference.errors import BadRequest, ModelNotFound
from inference.repository import ModelRepository, validate_name
from inference.runtime import OnnxModel
from inference.zoo import digits


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "A", ".hidden", "x" * 64, "..", "a..b", "name\x00", "ü"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequest, match="invalid model name"):
        validate_name(name)


def test_valid_names_stay_inside_the_repository(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    assert repo.model_dir("digits_mlp_small") == tmp_path.resolve() / "digits_mlp_small"
    (tmp_path / "linked").symlink_to("/etc")
    with pytest.raises(BadRequest, match="outside the model repository"):
        repo.model_dir("linked")
    with pytest.raises(ModelNotFound, match="unknown model 'nothing'"):
        repo.card("nothing")
    assert repo.names() == []


def test_card_validation_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="missing field 'family'"):
        ModelCard.read(tmp_path)
    with pytest.raises(ValueError, match="source must be"):
        Accuracy("top1", 0.5, "rumour", "")
    with pytest.raises(ValueError, match="fraction"):
        Accuracy("top1", 75.1, "published", "percent by mistake")


def test_digits_family_cards_are_complete_and_true(digits_repo: ModelRepository) -> None:
    cards = {c.name: c for c in digits_repo.cards("digits")}
    assert set(cards) == {"digits_linear", "digits_mlp_small", "digits_mlp_large"}
    sizes = [cards[n].file_bytes for n in ("digits_linear", "digits_mlp_small", "digits_mlp_large")]
    assert sizes == sorted(sizes) and sizes[2] > 10 * sizes[0], "variants must differ in size"
    _, x_test, _, y_test = digits.load_split()
    for name, card in cards.items():
        path = digits_repo.onnx_path(name)
        assert (card.file_bytes, card.sha256) == file_digest(path)
        assert card.inputs[0].shape == (-1, 64) and card.inputs[0].datatype == "FP32"
        acc = card.accuracy[0]
        assert acc.source == "measured" and "held-out" in acc.how and f"n={len(y_test)}" in acc.how
        assert acc.value >= 0.9
        # The recorded accuracy is what the installed file actually achieves.
        probs = OnnxModel(path).run({"input": x_test})["probabilities"]
        assert (probs.argmax(1) == y_test).mean() == pytest.approx(acc.value, abs=1e-4)


def test_digits_build_is_deterministic(tmp_path: Path, digits_repo: ModelRepository) -> None:
    again = digits.build(ModelRepository(tmp_path), only=["digits_linear", "digits_mlp_small"])
    for card in again:
        assert card.sha256 == digits_repo.card(card.name).sha256


def test_rebuild_replaces_atomically_and_leaves_no_staging(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    digits.build(repo, only=["digits_linear"])
    digits.build(repo, only=["digits_linear"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_linear"]
    m = OnnxModel(repo.onnx_path("digits_linear"))
    out = m.run({"input": np.zeros((3, 64), dtype=np.float32)})["probabilities"]
    assert out.shape == (3, 10)
