"""Blacklight: detection of black-box query attacks by hashed fingerprints (Li et al.).

H. Li, S. Shan, E. Wenger, J. Zhang, H. Zheng, B. Y. Zhao, "Blacklight: Scalable Defense for
Neural Networks against Query-Based Black-Box Attacks", arXiv:2006.14042 (USENIX Security 2022);
seed ref. 11.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .base import Need, Needs, StreamDetector, check_array, check_positive_int, register


@dataclass
class _BlacklightState:
    postings: dict[int, list[int]] = field(default_factory=dict)  # hash -> recent query numbers holding it
    fingerprints: deque = field(default_factory=deque)  # (query number, hashes) in arrival order
    seen: int = 0
    detections: int = 0


@register("blacklight")
class Blacklight(StreamDetector):
    """Quantise each query, hash every sliding window of the flattened input, keep the ``top_n``
    largest hashes as its fingerprint, and alarm when a new query shares at least the match
    threshold of hashes with one earlier query of the same account.

    As in the paper: pixel quantisation (step ``quantization`` in input units), sliding windows with
    stride, top-N hash fingerprint, match-count threshold, hash-table lookups that cost O(1) per
    query whatever the history. Adaptations for small inputs (8x8 digits instead of 32x32x3):
    window ``window=12`` instead of 20, ``top_n=20`` instead of 50 and 9 quantisation levels
    (``levels``; the paper: step 50 of 255); windows that appear in more
    than ``common_share`` of benign queries (blank borders) are dropped before the top-N choice, and
    each hash keeps at most ``max_postings`` query numbers, so a lookup stays O(1) when many queries
    share a hash. The hash is a seeded 64-bit linear hash instead of SHA-256 (collisions are just
    as unlikely for matching; it is not meant to resist an adversary who knows the seed). The state
    is per account (the paper also describes one global store), the match threshold is calibrated
    on simulated benign accounts to about ``fpr`` of accounts alarmed, and an account's store is
    cleared after an alarm so one attack yields a few events rather than one per query.
    """

    method = "li2020-blacklight"
    needs = Needs(trusted_data=Need.REQUIRED)
    calibration_tail = "empirical"  # integer match counts

    def __init__(self, quantization: float | None = None, levels: int = 9, window: int = 12, stride: int = 1,
                 top_n: int = 20, match_threshold: int | None = None, common_share: float = 0.05,
                 history: int = 10_000, max_postings: int = 256, fpr: float = 0.01,
                 calibration_streams: int = 20, calibration_length: int = 1000, max_accounts: int = 10_000,
                 random_state: int = 0):
        self.quantization = quantization
        self.levels = levels
        self.window = window
        self.stride = stride
        self.top_n = top_n
        self.match_threshold = match_threshold
        self.common_share = common_share
        self.history = history
        self.max_postings = max_postings
        self.fpr = fpr
        self.calibration_streams = calibration_streams
        self.calibration_length = calibration_length
        self.max_accounts = max_accounts
        self.random_state = random_state

    # -- fingerprints ---------------------------------------------------------------------------
    def _window_hashes(self, x: np.ndarray) -> np.ndarray:
        q = np.floor((x - self.offset_) / self.step_ + 0.5).astype(np.int64).astype(np.uint64)  # bins centred on lo + k*step
        wins = np.lib.stride_tricks.sliding_window_view(q, self.window)[:: self.stride]
        with np.errstate(over="ignore"):
            return np.unique(wins @ self.weights_)  # wraps modulo 2**64: a random linear hash

    def fingerprint(self, x: Any) -> np.ndarray:
        """The ``top_n`` largest informative window hashes of one query (uint64, ascending)."""
        self._check_fitted("weights_")
        h = self._window_hashes(np.asarray(x, dtype=np.float64).reshape(-1))
        if len(self.common_):
            h = h[~np.isin(h, self.common_, assume_unique=True)]
        return h[-self.top_n:]

    def fit(self, X: Any, y: Any = None, *, model: Any = None) -> Blacklight:
        """Learn the quantisation range and the common (uninformative) windows from benign ``X``;
        calibrate the match threshold unless ``match_threshold`` is given."""
        X = check_array(X)
        check_positive_int("window", self.window)
        check_positive_int("stride", self.stride)
        check_positive_int("top_n", self.top_n)
        check_positive_int("history", self.history)
        check_positive_int("max_postings", self.max_postings)
        if self.window > X.shape[1]:
            raise ValueError(f"window={self.window} is longer than the input ({X.shape[1]} values)")
        self.n_features_in_ = X.shape[1]
        lo, hi = float(X.min()), float(X.max())
        step = self.quantization if self.quantization is not None else (hi - lo) / check_positive_int("levels", self.levels)
        if not step > 0:
            raise ValueError(f"quantization step must be > 0; got {step}")
        self.offset_, self.step_ = lo, float(step)
        rng = np.random.default_rng(self.random_state)
        self.weights_ = rng.integers(1, 2**63, size=self.window, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.common_ = np.empty(0, dtype=np.uint64)
        all_h = [self._window_hashes(x) for x in X]
        uniq, counts = np.unique(np.concatenate(all_h), return_counts=True)
        self.common_ = np.sort(uniq[counts > self.common_share * len(X)])
        self.reset()
        if self.match_threshold is not None:
            self.threshold_ = float(check_positive_int("match_threshold", self.match_threshold)) - 0.5
        else:  # integer match counts: alarm above the calibrated maximum benign match count
            self.threshold_ = float(np.floor(self._calibrate(X))) + 0.5
        return self

    # -- the stream ------------------------------------------------------------------------------
    def _new_state(self) -> _BlacklightState:
        return _BlacklightState()

    def _reset_state(self, state: _BlacklightState) -> None:
        state.postings.clear()
        state.fingerprints.clear()

    def _score_one(self, state: _BlacklightState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        fp = self.fingerprint(x)
        qid = state.seen
        counts: dict[int, int] = {}
        for h in fp.tolist():
            for other in state.postings.get(h, ()):
                counts[other] = counts.get(other, 0) + 1
        best, best_id = 0, None
        for other, c in counts.items():
            if c > best:
                best, best_id = c, other
        # store the new fingerprint; evict the oldest beyond the history
        for h in fp.tolist():  # plain lists: most hashes have one holder, and a deque costs ~10x more
            ids = state.postings.get(h)
            if ids is None:
                state.postings[h] = [qid]
            else:
                ids.append(qid)
                if len(ids) > self.max_postings:
                    del ids[0]
        state.fingerprints.append((qid, fp))
        if len(state.fingerprints) > self.history:
            old_id, old_fp = state.fingerprints.popleft()
            for h in old_fp.tolist():
                ids = state.postings.get(h)
                if ids and ids[0] == old_id:
                    del ids[0]
                if ids is not None and not ids:
                    del state.postings[h]
        evidence = {"matches": best, "top_n": int(len(fp)), "matched_query": best_id,
                    "stored_queries": len(state.fingerprints)}
        return float(best), evidence
