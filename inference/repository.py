"""The model repository: a folder of ``<name>/model.onnx`` + ``<name>/card.json``, kept outside git.

Names come from URLs, so they are validated against a strict pattern and the resolved path must stay
inside the repository: no request can make the server open a file elsewhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from inference.cards import CARD_FILE, MODEL_FILE, ModelCard
from inference.errors import BadRequest, ModelNotFound

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
ENV_VAR = "MARK_MODEL_REPO"


def default_root() -> Path:
    """``$MARK_MODEL_REPO``, else ``model-repo/`` in the source checkout, else ``~/.cache/mark/model-repo``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "model-repo"
    return Path.home() / ".cache" / "mark" / "model-repo"


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or ".." in name:
        raise BadRequest(
            f"invalid model name {name!r}: use 1-63 characters from a-z 0-9 _ . - starting with a letter or digit"
        )
    return name


class ModelRepository:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).resolve() if root is not None else default_root()

    def model_dir(self, name: str) -> Path:
        validate_name(name)
        path = (self.root / name).resolve()
        if path.parent != self.root:
            raise BadRequest(f"invalid model name {name!r}: resolves outside the model repository")
        return path

    def has(self, name: str) -> bool:
        try:
            d = self.model_dir(name)
        except BadRequest:
            return False
        return (d / MODEL_FILE).is_file() and (d / CARD_FILE).is_file()

    def onnx_path(self, name: str) -> Path:
        if not self.has(name):
            raise ModelNotFound(
                f"unknown model {name!r}: not in repository {self.root} (build it with `mark zoo build`)"
            )
        return self.model_dir(name) / MODEL_FILE

    def card(self, name: str) -> ModelCard:
        if not self.has(name):
            raise ModelNotFound(
                f"unknown model {name!r}: not in repository {self.root} (build it with `mark zoo build`)"
            )
        return ModelCard.read(self.model_dir(name))

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.has(p.name))

    def cards(self, family: str | None = None) -> list[ModelCard]:
        cards = [self.card(n) for n in self.names()]
        return [c for c in cards if family is None or c.family == family]
