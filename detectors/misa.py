"""MISA, misattribution (Kiourti, Li, Roy, Sikka & Jha, "MISA: Online Defense of Trojaned Models
using Misattributions", arXiv:2103.15918, 2021; seed ref 34).

A trojaned model's decision on a triggered input is attributed to a small patch (the trigger) rather
than to the object. Attribution here is model-agnostic occlusion: every ``patch`` x ``patch`` window
is replaced by the clean mean image and the drop in the predicted class's probability is recorded.
As in the paper's second step, the most-attributed region is then transplanted onto clean reference
images: a trigger carries the decision with it, an ordinary stroke does not.

Adapters: any model with probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import image_shape_for, probabilities, require_model


@register("misa")
class MISA(InputDetector):
    """Score = fraction of clean probes the top-attributed patch turns into the input's predicted class,
    plus ``0.1 x`` the attribution concentration (share of the total occlusion drop in that patch)."""

    method = "kiourti2021-misa"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.REQUIRED, probabilities=Need.REQUIRED)

    def __init__(self, patch: int = 3, stride: int = 1, n_probes: int = 20, image_shape: tuple[int, int] | None = None,
                 random_state: int = 0, fpr: float = 0.05):
        self.patch = patch
        self.stride = stride
        self.n_probes = n_probes
        self.image_shape = image_shape
        self.random_state = random_state
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        h, w = self.shape_ = image_shape_for(X.shape[1], self.image_shape)
        k, s = int(self.patch), int(self.stride)
        if not 1 <= k <= min(h, w) or s < 1:
            raise ValueError(f"patch must be in 1..{min(h, w)} and stride >= 1; got {self.patch}, {self.stride}")
        masks = []
        for r in range(0, h - k + 1, s):
            for c in range(0, w - k + 1, s):
                m = np.zeros((h, w), dtype=bool)
                m[r:r + k, c:c + k] = True
                masks.append(m.reshape(-1))
        self.masks_ = np.array(masks)
        self.baseline_ = X.mean(axis=0)
        rng = np.random.default_rng(self.random_state)
        self.probes_ = X[rng.choice(len(X), min(int(self.n_probes) * 3, len(X)), replace=False)]
        self.probe_pred_ = probabilities(require_model(model, "MISA"), self.probes_).argmax(axis=1)

    def attribution(self, X: np.ndarray, model: Any) -> tuple[np.ndarray, np.ndarray]:
        """(occlusion drop per window (n, n_windows), predicted class per input)."""
        m = require_model(model, "MISA")
        p = probabilities(m, X)
        pred = p.argmax(axis=1)
        n, M = len(X), len(self.masks_)
        occluded = np.where(self.masks_[None], self.baseline_[None, None, :], X[:, None, :])
        q = probabilities(m, occluded.reshape(n * M, -1)).reshape(n, M, -1)
        drop = p[np.arange(n), pred][:, None] - q[np.arange(n)[:, None], np.arange(M)[None, :], pred[:, None]]
        return drop, pred

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        m = require_model(model, "MISA")
        drop, pred = self.attribution(X, m)
        top = drop.argmax(axis=1)
        positive = np.clip(drop, 0, None)
        concentration = positive[np.arange(len(X)), top] / (positive.sum(axis=1) + 1e-12)
        flips = np.zeros(len(X))
        for i in range(len(X)):
            probes = self.probes_[self.probe_pred_ != pred[i]][: int(self.n_probes)]
            if len(probes) == 0:
                continue
            mask = self.masks_[top[i]]
            grafted = np.where(mask[None], X[i][None], probes)
            flips[i] = float((probabilities(m, grafted).argmax(axis=1) == pred[i]).mean())
        return flips + 0.1 * concentration
