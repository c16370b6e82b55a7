"""Parts shared by the query-stream detectors: feature spaces, a bounded vector buffer, and the
predicted label of one query. The stream-detector base itself is :class:`kizashi.detectors.base.StreamDetector`.

Not a detector module (the leading underscore keeps it out of the registry's auto-import).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .models import as_model, provides

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
            if m is None or not provides(m, "activations"):
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


#: rows a new account's buffer starts with (grown by doubling): most accounts send few queries
INITIAL_ROWS = 4


class VectorBuffer:
    """The last ``capacity`` vectors of one account (float32 ring, grown by doubling so small
    accounts stay small), with their squared norms for fast distance computation."""

    __slots__ = ("capacity", "dim", "data", "norms", "size", "head")

    def __init__(self, dim: int, capacity: int):
        self.capacity, self.dim = int(capacity), int(dim)
        self.data = np.empty((min(INITIAL_ROWS, self.capacity), self.dim), dtype=np.float32)
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
        self.data = np.empty((max(INITIAL_ROWS, len(data)) if len(data) < self.capacity else self.capacity, self.dim),
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
        self.data = np.empty((min(INITIAL_ROWS, self.capacity), self.dim), dtype=np.float32)
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
