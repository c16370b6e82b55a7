"""MagNet's detector (Meng & Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples",
ACM CCS 2017; seed ref 25): an autoencoder learns the manifold of clean inputs; inputs far from it
reconstruct badly. The probability-divergence detector compares the model's output on the input and
on its reconstruction (Jensen-Shannon divergence at a temperature).

Adapters: any (the model is optional: probabilities for the divergence score).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import model_logits, require_model

DETECTORS = ("reconstruction", "divergence", "both")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * (np.log(np.clip(a, 1e-12, 1)) - np.log(np.clip(b, 1e-12, 1)))).sum(axis=1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@register("magnet")
class MagNet(InputDetector):
    """Autoencoder (scikit-learn ``MLPRegressor``, trained as a denoising autoencoder) reconstruction
    error, mean ``|x - AE(x)|^p``; ``detector="divergence"`` uses the JSD between ``softmax(z/T)`` of
    the input and of its reconstruction (needs the model), ``"both"`` the larger of the two after
    standardising each on the clean data."""

    method = "meng2017-magnet"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.OPTIONAL, logits=Need.OPTIONAL, probabilities=Need.OPTIONAL)

    def __init__(self, hidden: tuple[int, ...] = (32,), detector: str = "reconstruction", p: int = 1,
                 noise: float = 0.05, temperature: float = 10.0, max_iter: int = 400, random_state: int = 0,
                 fpr: float = 0.05):
        self.hidden = hidden
        self.detector = detector
        self.p = p
        self.noise = noise
        self.temperature = temperature
        self.max_iter = max_iter
        self.random_state = random_state
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        from sklearn.neural_network import MLPRegressor

        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {self.p}")
        if self.detector != "reconstruction":
            require_model(model, f"MagNet(detector={self.detector!r})")
        rng = np.random.default_rng(self.random_state)
        self.low_, self.high_ = float(X.min()), float(X.max())
        scale = (self.high_ - self.low_) or 1.0
        noisy = np.clip(X + self.noise * scale * rng.standard_normal(X.shape), self.low_, self.high_)
        self.autoencoder_ = MLPRegressor(hidden_layer_sizes=tuple(self.hidden), activation="relu", max_iter=self.max_iter,
                                         random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.autoencoder_.fit(noisy, X)
        self.stats_ = None
        if self.detector == "both":
            parts = self._parts(X, model)
            self.stats_ = [(float(v.mean()), float(v.std()) or 1.0) for v in parts]

    def reconstruct(self, X: Any) -> np.ndarray:
        """The autoencoder's reconstruction of ``X``, clipped to the range seen in training."""
        self._check_fitted("autoencoder_")
        return np.clip(self.autoencoder_.predict(np.asarray(X, dtype=np.float64)), self.low_, self.high_)

    def _parts(self, X: np.ndarray, model: Any) -> list[np.ndarray]:
        R = self.reconstruct(X)
        out = []
        if self.detector in ("reconstruction", "both"):
            out.append((np.abs(X - R) ** self.p).mean(axis=1))
        if self.detector in ("divergence", "both"):
            m = require_model(model, f"MagNet(detector={self.detector!r})")
            t = float(self.temperature)
            out.append(_jsd(_softmax(model_logits(m, X) / t), _softmax(model_logits(m, R) / t)))
        return out

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        parts = self._parts(X, model)
        if self.detector != "both":
            return parts[0]
        return np.max([(v - mu) / sd for v, (mu, sd) in zip(parts, self.stats_, strict=True)], axis=0)
