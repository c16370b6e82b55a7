"""Feature Squeezing (Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep
Neural Networks", NDSS 2018; seed ref 31): squeeze the input (colour bit-depth reduction, median
smoothing) and compare the model's predictions; a large L1 change marks an adversarial input.

Adapters: any model with probabilities (SklearnModel, TorchModel, OnnxModel, ArtModel); images reshaped by image_shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import image_shape_for, probabilities, require_model


@register("feature_squeezing")
class FeatureSqueezing(InputDetector):
    """Score = max over squeezers of ``||p(x) - p(squeeze(x))||_1``.

    Squeezers: bit-depth reduction to ``bit_depth`` bits over ``value_range`` (learned from the clean
    data when None) and a ``median_size`` x ``median_size`` median filter over the image
    (``image_shape``; a square shape is inferred from the number of features). Set either to None to
    drop that squeezer.
    """

    method = "xu2018-feature-squeezing"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.REQUIRED, probabilities=Need.REQUIRED)

    def __init__(self, bit_depth: int | None = 1, median_size: int | None = 2,
                 image_shape: tuple[int, int] | None = None, value_range: tuple[float, float] | None = None,
                 fpr: float = 0.05):
        self.bit_depth = bit_depth
        self.median_size = median_size
        self.image_shape = image_shape
        self.value_range = value_range
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        if self.bit_depth is None and self.median_size is None:
            raise ValueError("FeatureSqueezing needs at least one squeezer (bit_depth or median_size)")
        if self.bit_depth is not None and not 1 <= int(self.bit_depth) <= 16:
            raise ValueError(f"bit_depth must be in 1..16, got {self.bit_depth}")
        if self.median_size is not None and int(self.median_size) < 2:
            raise ValueError(f"median_size must be >= 2, got {self.median_size}")
        self.shape_ = image_shape_for(X.shape[1], self.image_shape) if self.median_size else None
        lo, hi = self.value_range if self.value_range is not None else (float(X.min()), float(X.max()))
        if not hi > lo:
            raise ValueError(f"value_range must have max > min, got {(lo, hi)}")
        self.range_ = (float(lo), float(hi))

    def squeeze_bits(self, X: np.ndarray) -> np.ndarray:
        lo, hi = self.range_
        levels = 2 ** int(self.bit_depth) - 1
        u = np.clip((X - lo) / (hi - lo), 0.0, 1.0)
        return lo + np.round(u * levels) / levels * (hi - lo)

    def squeeze_median(self, X: np.ndarray) -> np.ndarray:
        from scipy.ndimage import median_filter

        imgs = X.reshape((len(X),) + self.shape_)
        k = int(self.median_size)
        return median_filter(imgs, size=(1, k, k), mode="reflect").reshape(X.shape)

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        m = require_model(model, "FeatureSqueezing")
        p = probabilities(m, X)
        diffs = []
        if self.bit_depth is not None:
            diffs.append(np.abs(p - probabilities(m, self.squeeze_bits(X))).sum(axis=1))
        if self.median_size is not None:
            diffs.append(np.abs(p - probabilities(m, self.squeeze_median(X))).sum(axis=1))
        return np.max(diffs, axis=0)
