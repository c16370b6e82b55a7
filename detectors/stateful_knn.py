"""Stateful detection of black-box adversarial-example crafting (Chen, Carlini, Wagner 2019).

S. Chen, N. Carlini, D. Wagner, "Stateful Detection of Black-Box Adversarial Attacks", 1st ACM
Workshop on Security and Privacy on AI, 2019 (seed ref. 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from ._stream_parts import FeatureSpace, VectorBuffer
from .base import Need, Needs, StreamDetector, check_array, check_positive_int, register


@dataclass
class _KnnState:
    buffer: VectorBuffer
    seen: int = 0
    detections: int = 0


@register("stateful_knn")
class StatefulKNN(StreamDetector):
    """Per-account buffer of past queries; alarm when the mean distance of a new query to its ``k``
    nearest earlier queries falls below a threshold (black-box attacks query many near-copies).

    As in the paper: per-account query buffer (``history`` queries), mean L2 distance to the ``k``
    nearest buffered queries, threshold at a low percentile of that statistic on benign data, buffer
    cleared after each alarm. Deviations: the paper measures distances in the output space of a
    similarity encoder trained with a contrastive loss; here the space is the raw input, a PCA of the
    benign data, or the protected model's hidden ``features`` (``features=``). The threshold is
    calibrated so that about ``fpr`` of simulated benign *accounts* (streams of reference queries)
    would ever alarm, rather than a per-query 0.1% percentile, because a SOC counts alarmed accounts.
    """

    method = "chen2019-stateful"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.OPTIONAL, activations=Need.OPTIONAL)
    higher_is_suspicious = False

    def __init__(self, k: int = 20, history: int = 10_000, features: str = "raw", n_components: int = 20,
                 fpr: float = 0.01, calibration_streams: int = 40, calibration_length: int = 1000,
                 max_accounts: int = 10_000, random_state: int = 0):
        self.k = k
        self.history = history
        self.features = features
        self.n_components = n_components
        self.fpr = fpr
        self.calibration_streams = calibration_streams
        self.calibration_length = calibration_length
        self.max_accounts = max_accounts
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, *, model: Any = None) -> StatefulKNN:
        """Learn the feature space from benign ``X`` and calibrate the distance threshold on it."""
        X = check_array(X)
        check_positive_int("k", self.k)
        check_positive_int("history", self.history, minimum=self.k)
        if len(X) <= self.k:
            raise ValueError(f"need more than k={self.k} reference queries; got {len(X)}")
        self.n_features_in_ = X.shape[1]
        self.space_ = FeatureSpace(self.features, self.n_components).fit(X, model)
        self.reset()
        self.threshold_ = self._calibrate(X)
        return self

    def _new_state(self) -> _KnnState:
        return _KnnState(VectorBuffer(self.space_.dim_, self.history))

    def _reset_state(self, state: _KnnState) -> None:
        state.buffer.clear()

    def _score_one(self, state: _KnnState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        z = self.space_.transform_one(x)
        buf = state.buffer
        score = float("nan")
        if len(buf) >= self.k:
            d = buf.distances(z)
            score = float(np.partition(d, self.k - 1)[: self.k].mean())
        buf.append(z)
        return score, {"k": self.k, "mean_knn_distance": round(score, 6), "buffer_size": len(buf)}
