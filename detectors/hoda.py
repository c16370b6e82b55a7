"""HODA: hardness-oriented detection of model-extraction attacks (Sadeghzadeh et al. 2021).

A. M. Sadeghzadeh, F. Dehghan, A. M. Sobhanian, R. Jalili, "HODA: Hardness-Oriented Detection of
Model Extraction Attacks", arXiv:2106.11424, 2021 (seed ref. 39).
"""

from __future__ import annotations

import copy
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .base import Need, Needs, StreamDetector, check_array, check_positive_int, register
from .models import as_model


@dataclass
class _HodaState:
    degrees: deque = field(default_factory=deque)
    hist: np.ndarray | None = None
    seen: int = 0
    detections: int = 0


@register("hoda")
class HODA(StreamDetector):
    """Hardness degree of each query = how often its predicted label changes across subsequent
    training checkpoints of the model; an account's histogram of hardness degrees over its last
    ``n_queries`` queries is compared with the benign histogram by Pearson distance (1 - r); alarm
    above a threshold calibrated on simulated benign accounts (about ``fpr`` of them alarmed).

    As in the paper: checkpoints saved at equal intervals during training, hardness degree in
    ``0 .. n_checkpoints - 1``, Pearson distance between histograms, a fixed number of queries per
    decision (the paper: 100). Deviations: ``fit(X, y)`` trains its own scikit-learn MLP on
    ``(X, y)`` and keeps ``n_checkpoints`` snapshots (``epochs_per_checkpoint`` epochs apart) unless
    ``checkpoints=`` gives the protected model's own snapshots (any models with ``predict_proba``; then
    the labels ``needs`` declares are not used);
    the benign histogram comes from ``X_calib`` (held-out benign queries) when given, else from
    ``X``. The window slides, so the test runs at every query once it is full.
    """

    method = "sadeghzadeh2021-hoda"
    needs = Needs(trusted_data=Need.REQUIRED, labels=Need.REQUIRED, model=Need.OPTIONAL, probabilities=Need.OPTIONAL)
    calibration_with_replacement = True

    def __init__(self, n_checkpoints: int = 11, epochs_per_checkpoint: int = 2, hidden: tuple[int, ...] = (64,),
                 n_queries: int = 100, fpr: float = 0.01, calibration_streams: int = 40,
                 calibration_length: int = 300, max_accounts: int = 10_000, random_state: int = 0):
        self.n_checkpoints = n_checkpoints
        self.epochs_per_checkpoint = epochs_per_checkpoint
        self.hidden = hidden
        self.n_queries = n_queries
        self.fpr = fpr
        self.calibration_streams = calibration_streams
        self.calibration_length = calibration_length
        self.max_accounts = max_accounts
        self.random_state = random_state

    # -- checkpoints ------------------------------------------------------------------------------
    def _train_checkpoints(self, X: np.ndarray, y: np.ndarray) -> list[Any]:
        from sklearn.neural_network import MLPClassifier

        net = MLPClassifier(hidden_layer_sizes=tuple(self.hidden), random_state=self.random_state)
        classes = np.unique(y)
        snaps = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(int(self.n_checkpoints)):
                for _ in range(int(self.epochs_per_checkpoint)):
                    net.partial_fit(X, y, classes=classes)
                snaps.append(copy.deepcopy(net))
        return snaps

    def _prepare_fast_path(self) -> None:
        """Stack same-shaped MLP checkpoints so one query costs a few small matrix products."""
        self._stacked = None
        nets = [getattr(c, "estimator", c) for c in self.checkpoints_]
        if all(hasattr(n, "coefs_") and getattr(n, "out_activation_", "") == "softmax" for n in nets):
            shapes = {tuple(w.shape for w in n.coefs_) for n in nets}
            acts = {n.activation for n in nets}
            if len(shapes) == 1 and acts <= {"relu", "tanh", "logistic", "identity"} and len(acts) == 1:
                layers = len(nets[0].coefs_)
                self._stacked = ([np.stack([n.coefs_[i] for n in nets]) for i in range(layers)],
                                 [np.stack([n.intercepts_[i] for n in nets]) for i in range(layers)],
                                 acts.pop(), np.stack([n.classes_ for n in nets]))

    def checkpoint_labels(self, X: Any) -> np.ndarray:
        """Predicted label of each checkpoint for each row of ``X``: shape (n_samples, n_checkpoints)."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features_in_)
        st = getattr(self, "_stacked", None)
        if st is None:
            return np.stack([np.asarray(c.predict_proba(X)).argmax(1) for c in self.checkpoints_], axis=1)
        Ws, bs, act, classes = st
        a = np.broadcast_to(X, (len(Ws[0]), *X.shape))
        for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
            a = a @ W + b[:, None, :]
            if i < len(Ws) - 1:
                a = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z,
                     "logistic": lambda z: 1 / (1 + np.exp(-z))}[act](a)
        return np.take_along_axis(classes, a.argmax(-1), axis=1).T

    def hardness(self, X: Any) -> np.ndarray:
        """Hardness degree of each row of ``X``: label changes between consecutive checkpoints."""
        self._check_fitted("checkpoints_")
        L = self.checkpoint_labels(check_array(X, n_features=self.n_features_in_, allow_1d=True))
        return (L[:, 1:] != L[:, :-1]).sum(axis=1)

    def fit(self, X: Any, y: Any = None, *, model: Any = None, checkpoints: list[Any] | None = None,
            X_calib: Any = None) -> HODA:
        X = check_array(X)
        check_positive_int("n_queries", self.n_queries, minimum=2)
        self.n_features_in_ = X.shape[1]
        if checkpoints is not None:
            if len(checkpoints) < 2:
                raise ValueError("hoda needs at least 2 checkpoints")
            self.checkpoints_ = [as_model(c) for c in checkpoints]
        else:
            check_positive_int("n_checkpoints", self.n_checkpoints, minimum=2)
            check_positive_int("epochs_per_checkpoint", self.epochs_per_checkpoint)
            if y is None:
                raise ValueError("hoda.fit needs y (training labels) to train checkpoints, or checkpoints=")
            y = np.asarray(y).reshape(-1)
            if len(y) != len(X):
                raise ValueError(f"y has {len(y)} labels for {len(X)} samples")
            self.checkpoints_ = self._train_checkpoints(X, y)
        self._prepare_fast_path()
        self.n_bins_ = len(self.checkpoints_)
        ref = X if X_calib is None else check_array(X_calib, n_features=self.n_features_in_, name="X_calib")
        if len(ref) < self.n_queries:
            raise ValueError(f"need at least n_queries={self.n_queries} benign queries to calibrate; got {len(ref)}")
        h = self.hardness(ref)
        self.benign_histogram_ = np.bincount(h, minlength=self.n_bins_).astype(np.float64) / len(h)
        self.reset()
        self.threshold_ = self._calibrate(ref)
        return self

    def _new_state(self) -> _HodaState:
        return _HodaState(degrees=deque(maxlen=int(self.n_queries)), hist=np.zeros(self.n_bins_))

    def _reset_state(self, state: _HodaState) -> None:
        state.degrees.clear()
        state.hist = np.zeros(self.n_bins_)

    def _score_one(self, state: _HodaState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        L = self.checkpoint_labels(x)[0]
        deg = int((L[1:] != L[:-1]).sum())
        if len(state.degrees) == state.degrees.maxlen:
            state.hist[state.degrees[0]] -= 1
        state.degrees.append(deg)
        state.hist[deg] += 1
        if len(state.degrees) < self.n_queries:
            return float("nan"), {}
        a, b = state.hist, self.benign_histogram_
        if a.std() == 0 or b.std() == 0:
            dist = 1.0
        else:
            dist = float(1.0 - np.corrcoef(a, b)[0, 1])
        return dist, {"pearson_distance": round(dist, 5), "queries_in_window": len(state.degrees),
                      "mean_hardness": round(float(np.dot(np.arange(self.n_bins_), a) / a.sum()), 3)}
