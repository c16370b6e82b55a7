"""Shared parts of the query-stream detectors: feature spaces, a bounded vector buffer, and a
stream-detector base that calibrates thresholds on simulated benign accounts.

Not a detector module (the leading underscore keeps it out of the registry's auto-import).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from .base import StreamDetector, _severity, check_array
from .models import as_model

_T0 = datetime(2000, 1, 1, tzinfo=UTC)


# -- feature spaces ------------------------------------------------------------------------------


class FeatureSpace:
    """Where query distances are measured: ``raw`` inputs, ``pca`` of the benign reference data,
    or the protected model's ``features`` (hidden activations; needs a model with ``features``)."""

    KINDS = ("raw", "pca", "features")

    def __init__(self, kind: str = "raw", n_components: int = 20):
        if kind not in self.KINDS:
            raise ValueError(f"feature space must be one of {self.KINDS}; got {kind!r}")
        self.kind, self.n_components = kind, int(n_components)

    def fit(self, X: np.ndarray, model: Any = None) -> FeatureSpace:
        if self.kind == "pca":
            from sklearn.decomposition import PCA

            n = max(1, min(self.n_components, X.shape[0], X.shape[1]))
            self.pca_ = PCA(n_components=n, random_state=0).fit(X)
            self.dim_ = n
        elif self.kind == "features":
            m = as_model(model)
            if m is None or not hasattr(m, "features"):
                raise ValueError("features='features' needs fit(..., model=...) with a features(X) method")
            self.model_ = m
            self.dim_ = int(np.asarray(m.features(X[:1])).reshape(1, -1).shape[1])
        else:
            self.dim_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "pca":
            return self.pca_.transform(X)
        if self.kind == "features":
            return np.asarray(self.model_.features(X), dtype=np.float64).reshape(len(X), -1)
        return X

    def transform_one(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "raw":
            return x
        if self.kind == "pca":  # x @ components without sklearn's per-call validation overhead
            return (x - self.pca_.mean_) @ self.pca_.components_.T
        return self.transform(x.reshape(1, -1))[0]


# -- a bounded buffer of vectors -----------------------------------------------------------------


class VectorBuffer:
    """The last ``capacity`` vectors of one account (float32 ring, grown by doubling so small
    accounts stay small), with their squared norms for fast distance computation."""

    __slots__ = ("capacity", "dim", "data", "norms", "size", "head")

    def __init__(self, dim: int, capacity: int):
        self.capacity, self.dim = int(capacity), int(dim)
        self.data = np.empty((min(16, self.capacity), self.dim), dtype=np.float32)
        self.norms = np.empty(len(self.data), dtype=np.float32)
        self.size = 0
        self.head = 0  # next write position once full

    def __len__(self) -> int:
        return self.size

    def __getstate__(self):
        return (self.capacity, self.dim, self.data[: self.size].copy(), self.norms[: self.size].copy(), self.size,
                self.head)

    def __setstate__(self, st):
        self.capacity, self.dim, data, norms, self.size, self.head = st
        self.data = np.empty((max(16, len(data)) if len(data) < self.capacity else self.capacity, self.dim),
                             dtype=np.float32)
        self.norms = np.empty(len(self.data), dtype=np.float32)
        self.data[: self.size], self.norms[: self.size] = data, norms

    def append(self, v: np.ndarray) -> None:
        if self.size < self.capacity:
            if self.size == len(self.data):
                n = min(self.capacity, 2 * len(self.data))
                self.data = np.resize(self.data, (n, self.dim))
                self.norms = np.resize(self.norms, n)
            i = self.size
            self.size += 1
        else:
            i = self.head
            self.head = (self.head + 1) % self.capacity
        self.data[i] = v
        self.norms[i] = float(np.dot(self.data[i], self.data[i]))

    def distances(self, v: np.ndarray) -> np.ndarray:
        """Euclidean distances from ``v`` to every stored vector."""
        d = self.data[: self.size]
        v32 = v.astype(np.float32)
        # einsum, not BLAS: one query is latency-bound, and a threaded BLAS matrix-vector product
        # degrades badly when the cores are busy (measured 10x slower under load)
        sq = self.norms[: self.size] - 2.0 * np.einsum("ij,j->i", d, v32) + float(np.dot(v32, v32))
        return np.sqrt(np.maximum(sq, 0.0))

    def view(self) -> np.ndarray:
        return self.data[: self.size]

    def clear(self) -> None:
        self.size, self.head = 0, 0
        self.data = np.empty((min(16, self.capacity), self.dim), dtype=np.float32)
        self.norms = np.empty(len(self.data), dtype=np.float32)


# -- labels ------------------------------------------------------------------------------------


def as_label(prediction: Any, *, model: Any = None, x: np.ndarray | None = None) -> int:
    """The predicted class of one query: an int label, a probability vector, or the model's answer."""
    if prediction is None:
        if model is None or x is None:
            raise ValueError("this detector needs the model's prediction: pass observe(..., prediction=label "
                             "or probabilities) or fit(..., model=...)")
        return int(np.argmax(model.predict_proba(x.reshape(1, -1))[0]))
    arr = np.asarray(prediction)
    if arr.ndim == 0:
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr):
            raise ValueError(f"prediction must be a class index or a probability vector; got {prediction!r}")
        return int(arr)
    arr = arr.reshape(-1).astype(np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("prediction probability vector is empty or not finite")
    return int(np.argmax(arr))


# -- the stream-detector base --------------------------------------------------------------------


class QueryStreamDetector(StreamDetector):
    """A :class:`StreamDetector` built from ``_score_one`` (the per-query statistic).

    Subclasses implement ``_new_state()`` (an object with ``seen`` and ``detections`` attributes),
    ``_score_one(state, x, prediction, time) -> (score, evidence)`` (``nan`` = not enough queries
    yet) and optionally ``_reset_state(state)``; alarm logic, reset after alarm, severity and
    per-stream calibration live here. ``higher_is_suspicious = False`` for distance statistics.
    """

    higher_is_suspicious: ClassVar[bool] = True
    #: how the per-account threshold is read off the simulated benign accounts' extreme scores:
    #: "gumbel" fits an extreme-value (Gumbel) law to them and takes its ``fpr`` tail quantile, which
    #: extrapolates beyond the few dozen simulated accounts; "empirical" takes their plain quantile
    calibration_tail: ClassVar[str] = "gumbel"
    #: simulated benign accounts draw reference queries with replacement (window statistics of label
    #: or latent distributions; drawing a large share of a small reference set without replacement
    #: would understate their spread). Distance statistics draw without replacement: a repeated
    #: query is exactly what they look for.
    calibration_with_replacement: ClassVar[bool] = False
    #: constructor parameters consumed by calibration (set by subclasses)
    fpr: float = 0.01
    calibration_streams: int = 40
    calibration_length: int = 300
    random_state: int = 0

    # -- hooks ---------------------------------------------------------------------------------
    def _score_one(self, state: Any, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _reset_state(self, state: Any) -> None:
        """Forget the account's history after an alarm (papers: buffer cleared)."""

    def _is_alarm(self, score: float) -> bool:
        if not np.isfinite(score):
            return False
        return score < self.threshold_ if not self.higher_is_suspicious else score > self.threshold_

    def _observe(self, state: Any, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, bool, dict]:
        state.seen += 1
        score, evidence = self._score_one(state, x, prediction, time)
        alarm = self._is_alarm(score)
        if alarm:
            state.detections += 1
            evidence = {"queries_seen": state.seen, **evidence, "detections": state.detections}
            self._reset_state(state)
        return float(score), alarm, evidence

    # -- scoring without events ---------------------------------------------------------------
    def score_stream(self, X: Any, predictions: Any = None, times: Any = None) -> np.ndarray:
        """Per-query statistic for ``X`` sent in order by one fresh account (no alarms, no reset);
        ``nan`` where the detector has not seen enough queries yet."""
        self._check_fitted()
        X = check_array(X, n_features=getattr(self, "n_features_in_", None))
        return self._stream_scores(self._new_state(), X, predictions, times)

    decision_function = score_stream

    def _stream_scores(self, state: Any, X: np.ndarray, predictions: Any, times: Any) -> np.ndarray:
        out = np.empty(len(X))
        for i, x in enumerate(X):
            p = None if predictions is None else predictions[i]
            t = times[i] if times is not None else _T0 + timedelta(seconds=10 * i)
            state.seen += 1
            out[i] = self._score_one(state, x, p, t)[0]
        return out

    def _calibrate(self, X: np.ndarray, predictions: np.ndarray | None = None) -> float:
        """Threshold such that about ``fpr`` of simulated benign accounts (streams of
        ``calibration_length`` reference queries in random order) would ever alarm. Benign accounts
        longer than ``calibration_length`` see more chances to alarm: set it to the longest
        account history you expect between resets."""
        fpr = float(self.fpr)
        if not 0 <= fpr < 1:
            raise ValueError(f"fpr must be in [0, 1), got {fpr}")
        rng = np.random.default_rng(self.random_state)
        replace = self.calibration_with_replacement
        length = int(self.calibration_length) if replace else min(int(self.calibration_length), len(X))
        extremes = []
        for _ in range(int(self.calibration_streams)):
            idx = rng.choice(len(X), size=length, replace=replace)
            s = self._stream_scores(self._new_state(), X[idx], None if predictions is None else predictions[idx],
                                    None)
            s = s[np.isfinite(s)]
            if len(s):
                extremes.append(s.max() if self.higher_is_suspicious else s.min())
        if not extremes:
            raise ValueError(f"reference data too small: {len(X)} queries never fill the detector's window")
        extremes = np.asarray(extremes)
        self.calibration_extremes_ = extremes
        if self.calibration_tail == "gumbel" and np.ptp(extremes) > 0 and fpr > 0:
            from scipy.stats import gumbel_l, gumbel_r

            if self.higher_is_suspicious:
                return float(max(gumbel_r.ppf(1.0 - fpr, *gumbel_r.fit(extremes)), extremes.max()))
            return float(min(gumbel_l.ppf(fpr, *gumbel_l.fit(extremes)), extremes.min()))
        if self.higher_is_suspicious:
            return float(np.quantile(extremes, 1.0 - fpr))
        return float(np.quantile(extremes, fpr))

    # -- events --------------------------------------------------------------------------------
    def make_event(self, score: float, *, threshold: float | None = None, severity: str | None = None,
                   **kw: Any):
        thr = float(threshold) if threshold is not None else getattr(self, "threshold_", None)
        if severity is None and not self.higher_is_suspicious and thr is not None:
            severity = _severity(thr / max(score, 1e-12), 1.0)
        return super().make_event(score, threshold=thr, severity=severity, **kw)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)
