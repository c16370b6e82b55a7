"""VarDetect: model-extraction detection by the latent distribution of an account's queries.

S. Pal, Y. Gupta, A. Kanade, S. Shevade, "Stateful Detection of Model Extraction Attacks",
arXiv:2107.05166, 2021 (seed ref. 37).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .base import Need, Needs, StreamDetector, check_array, check_positive_int, register


@dataclass
class _VarState:
    """The window's latent codes (a ring), each code's mean kernel value to the reference, and the
    running sum of the window's kernel matrix (kept exact by a full recomputation every wrap)."""

    Z: np.ndarray
    k_ref: np.ndarray
    n: int = 0
    head: int = 0
    k_sum: float = 0.0
    seen: int = 0
    detections: int = 0


class _Encoder:
    """Latent map: PCA, or the bottleneck of a small scikit-learn autoencoder (MLPRegressor X -> X)."""

    def __init__(self, kind: str, n_components: int, random_state: int):
        if kind not in ("pca", "autoencoder"):
            raise ValueError(f"latent must be 'pca' or 'autoencoder'; got {kind!r}")
        self.kind, self.n_components, self.random_state = kind, n_components, random_state

    def fit(self, X: np.ndarray) -> _Encoder:
        if self.kind == "pca":
            from sklearn.decomposition import PCA

            self.pca_ = PCA(n_components=min(self.n_components, *X.shape), random_state=self.random_state).fit(X)
        else:
            from sklearn.neural_network import MLPRegressor

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.ae_ = MLPRegressor(hidden_layer_sizes=(self.n_components,), activation="tanh", max_iter=300,
                                        random_state=self.random_state).fit(X, X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "pca":
            return (X - self.pca_.mean_) @ self.pca_.components_.T
        return np.tanh(X @ self.ae_.coefs_[0] + self.ae_.intercepts_[0])


@register("vardetect")
class VarDetect(StreamDetector):
    """Maximum mean discrepancy (Gaussian kernel, median-distance bandwidth) between the latent codes
    of an account's last ``window`` queries and benign latent codes; alarm above a threshold
    calibrated on simulated benign accounts (about ``fpr`` of them would ever alarm).

    Deviation: the paper learns the latent space with a variational autoencoder trained on benign
    (and outlier) data; here a PCA (``latent="pca"``, default) or a small scikit-learn autoencoder
    (``latent="autoencoder"``) stands in, since kizashi needs no deep-learning framework. The paper's
    MMD test between the user's and the benign latent distributions is kept (biased MMD² estimate,
    tested once ``min_queries`` queries are in the window).
    """

    method = "pal2021-vardetect"
    needs = Needs(trusted_data=Need.REQUIRED)
    calibration_with_replacement = True

    def __init__(self, latent: str = "pca", n_components: int = 8, window: int = 100, min_queries: int = 50,
                 n_reference: int = 200, fpr: float = 0.01, calibration_streams: int = 40,
                 calibration_length: int = 300, max_accounts: int = 10_000, random_state: int = 0):
        self.latent = latent
        self.n_components = n_components
        self.window = window
        self.min_queries = min_queries
        self.n_reference = n_reference
        self.fpr = fpr
        self.calibration_streams = calibration_streams
        self.calibration_length = calibration_length
        self.max_accounts = max_accounts
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, *, model: Any = None) -> VarDetect:
        """Learn the latent space and the benign reference codes from ``X``; half of ``X`` is kept
        apart to calibrate the threshold."""
        X = check_array(X)
        check_positive_int("n_components", self.n_components)
        check_positive_int("window", self.window, minimum=2)
        check_positive_int("min_queries", self.min_queries, minimum=2)
        check_positive_int("n_reference", self.n_reference, minimum=2)
        if self.min_queries > self.window:
            raise ValueError(f"min_queries={self.min_queries} exceeds window={self.window}")
        if len(X) < 2 * self.min_queries:
            raise ValueError(f"need at least {2 * self.min_queries} reference queries; got {len(X)}")
        self.n_features_in_ = X.shape[1]
        rng = np.random.default_rng(self.random_state)
        perm = rng.permutation(len(X))
        fit_part, calib_part = X[perm[: len(X) // 2]], X[perm[len(X) // 2:]]
        self.encoder_ = _Encoder(self.latent, int(self.n_components), self.random_state).fit(fit_part)
        Z = self.encoder_.transform(fit_part)
        self.reference_ = Z[: self.n_reference]
        d2 = ((self.reference_[:, None, :] - self.reference_[None, :, :]) ** 2).sum(-1)
        self.gamma_ = 1.0 / max(float(np.median(d2[d2 > 0])), 1e-12)
        self.k_rr_ = float(np.exp(-self.gamma_ * d2).mean())
        self.reset()
        self.threshold_ = self._calibrate(calib_part)
        return self

    def _new_state(self) -> _VarState:
        return _VarState(Z=np.zeros((int(self.window), self.reference_.shape[1])), k_ref=np.zeros(int(self.window)))

    def _reset_state(self, state: _VarState) -> None:
        state.n = state.head = 0
        state.k_sum = 0.0

    def _kernel_row(self, Z: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.exp(-self.gamma_ * ((Z - z) ** 2).sum(1))

    def _score_one(self, state: _VarState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        z = self.encoder_.transform(x.reshape(1, -1))[0]
        w = int(self.window)
        if state.n == w:  # drop the oldest code's row and column from the kernel sum
            old = state.Z[state.head]
            state.k_sum -= 2.0 * float(self._kernel_row(state.Z, old).sum()) - 1.0
            slot = state.head
            state.head = (state.head + 1) % w
        else:
            slot = state.n
            state.n += 1
        state.Z[slot] = z
        state.k_ref[slot] = float(self._kernel_row(self.reference_, z).mean())
        if state.head == 0 and state.n == w:  # once per wrap: recompute exactly (no drift)
            Z = state.Z
            sq = (Z * Z).sum(1)
            state.k_sum = float(np.exp(-self.gamma_ * np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0)).sum())
        else:
            state.k_sum += 2.0 * float(self._kernel_row(state.Z[: state.n], z).sum()) - 1.0
        n = state.n
        if n < self.min_queries:
            return float("nan"), {}
        mmd2 = state.k_sum / (n * n) + self.k_rr_ - 2.0 * float(state.k_ref[:n].mean())
        return float(mmd2), {"mmd2": round(mmd2, 6), "queries_in_window": n, "latent": self.latent}
