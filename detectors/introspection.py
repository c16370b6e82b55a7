"""Introspection (Aigrain & Detyniecki, "Detecting Adversarial Examples and Other
Misclassifications in Neural Networks by Introspection", ICML 2019 workshop; seed ref 30): a small
classifier reads the protected model's logit vector and tells clean from adversarial inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import (
    adversarial_or_crafted,
    fit_clean_vs_adversarial,
    make_classifier,
    model_logits,
    positive_score,
    require_model,
)


@register("introspection")
class Introspection(InputDetector):
    """Score = probability, from a classifier over the logits, that the input is adversarial.

    ``sort_logits=True`` feeds the logits in descending order (class-agnostic shape of the output).
    Models without ``logits`` contribute log-probabilities (equal to logits up to a per-row constant).
    Without ``X_adv`` it crafts its own against ``model`` (white-box PGD with input gradients,
    black-box HopSkipJump otherwise; ``craft_eps``, ``craft_samples``, seeded by ``random_state``:
    :func:`kizashi.detectors.models.craft_adversarial`). Adapters: any (SklearnModel, TorchModel,
    OnnxModel, ArtModel).
    """

    method = "aigrain2019-introspection"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.OPTIONAL, model=Need.REQUIRED, logits=Need.OPTIONAL,
                  probabilities=Need.OPTIONAL, gradients=Need.OPTIONAL)

    def __init__(self, classifier: Any = None, sort_logits: bool = False, random_state: int = 0,
                 fpr: float = 0.05, craft_eps: float = 0.15, craft_samples: int = 200):
        self.classifier = classifier
        self.sort_logits = sort_logits
        self.random_state = random_state
        self.fpr = fpr
        self.craft_eps = craft_eps
        self.craft_samples = craft_samples

    def _view(self, X: np.ndarray, model: Any) -> np.ndarray:
        z = model_logits(require_model(model, "Introspection"), X)
        return -np.sort(-z, axis=1) if self.sort_logits else z

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        clf = self.classifier if self.classifier is not None else make_classifier((32,), random_state=self.random_state)
        X_adv = adversarial_or_crafted(self, X, y, model, X_adv)
        self.classifier_ = fit_clean_vs_adversarial(clf, self._view(X, model), self._view(X_adv, model))

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        return positive_score(self.classifier_, self._view(X, model))
