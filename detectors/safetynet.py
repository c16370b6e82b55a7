"""SafetyNet (Lu, Issaranon & Forsyth, "SafetyNet: Detecting and Rejecting Adversarial Examples
Robustly", ICCV 2017; seed ref 28): an RBF-kernel SVM over the quantised codes of late-layer ReLU
activations; adversarial inputs produce activation patterns unlike those of clean inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import (
    adversarial_or_crafted,
    fit_clean_vs_adversarial,
    late_layer,
    positive_score,
    require_model,
)


@register("safetynet")
class SafetyNet(InputDetector):
    """Quantise each unit of the last hidden layer (logits for models without one) into ``n_levels``
    codes at per-unit quantiles of the clean activations, then score with an RBF-SVM trained on the
    codes of clean vs adversarial inputs (decision value; higher = adversarial).
    Without ``X_adv`` it crafts its own against ``model`` (white-box PGD with input gradients,
    black-box HopSkipJump otherwise; ``craft_eps``, ``craft_samples``, seeded by ``random_state``:
    :func:`kizashi.detectors.models.craft_adversarial`). Adapters: any (SklearnModel, TorchModel,
    OnnxModel, ArtModel).
    """

    method = "lu2017-safetynet"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.OPTIONAL, model=Need.REQUIRED, activations=Need.OPTIONAL, logits=Need.OPTIONAL,
                  probabilities=Need.OPTIONAL, gradients=Need.OPTIONAL)

    def __init__(self, n_levels: int = 4, C: float = 1.0, gamma: str | float = "scale", fpr: float = 0.05,
                 craft_eps: float = 0.15, craft_samples: int = 200, random_state: int = 0):
        self.n_levels = n_levels
        self.C = C
        self.gamma = gamma
        self.fpr = fpr
        self.craft_eps = craft_eps
        self.craft_samples = craft_samples
        self.random_state = random_state

    def codes(self, X: Any, model: Any = None) -> np.ndarray:
        """The quantised late-layer code of each input (integers in ``0..n_levels-1``)."""
        self._check_fitted("edges_")
        model = require_model(model if model is not None else self.model_, "SafetyNet")
        A = late_layer(model, np.asarray(X, dtype=np.float64))
        return np.stack([np.searchsorted(e, A[:, j], side="right") for j, e in enumerate(self.edges_)], axis=1)

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        from sklearn.svm import SVC

        if int(self.n_levels) < 2:
            raise ValueError(f"n_levels must be >= 2, got {self.n_levels}")
        A = late_layer(require_model(model, "SafetyNet"), X)
        qs = np.linspace(0, 1, int(self.n_levels) + 1)[1:-1]
        self.edges_ = [np.unique(np.quantile(A[:, j], qs)) for j in range(A.shape[1])]
        X_adv = adversarial_or_crafted(self, X, y, model, X_adv)
        svm = SVC(kernel="rbf", C=self.C, gamma=self.gamma)
        self.svm_ = fit_clean_vs_adversarial(svm, self.codes(X, model), self.codes(X_adv, model))

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        return positive_score(self.svm_, self.codes(X, model))
