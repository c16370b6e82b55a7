"""Spectral signatures (Tran, Li, Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018).

For each label, the learned representations of its training samples are centred and projected on
their top singular vector; backdoor samples relabelled to that class leave a trace there, so their
squared projections (outlier scores) are large. The paper removes the ``1.5 * eps`` highest-scoring
samples per class (``eps`` = an upper bound on the poisoned share of the target class).

kizashi addition, so that the detector can *report* rather than only filter: for each class, the
top 7.5% samples by spectral score are checked for label consistency in input space (share
of their ``n_neighbors`` nearest training inputs carrying another label; BadNets poisons are images of
other digits relabelled to the target). The class where that share is highest, if above
``disagreement_threshold``, is reported as the backdoor target and only its top samples are flagged
(measured shares: docs/detectors.md). When about half of a class is poison (10% BadNets poison
overall on digits), the fit centres on the poisons and the least outlying samples are the
label-inconsistent ones; if those are more inconsistent than the top-scored samples, that class's
score is reversed and ``details["poison_majority"]`` is set. Representations: the model's last hidden layer
(``model.features``), else the raw inputs. Deterministic (an SVD, no randomness).

Adapters: any; hidden activations from SklearnModel MLPs, TorchModel, ArtModel(layer=...), OnnxModel(features_output=...), else the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DatasetDetector, Need, Needs, Report, register
from .models import as_model, provides

#: share of each class (top spectral scores) whose label consistency decides the verdict
VERDICT_SHARE = 0.075


@register("spectral_signature")
class SpectralSignature(DatasetDetector):
    method = "tran2018-spectral-signature"
    needs = Needs(labels=Need.REQUIRED, model=Need.OPTIONAL, activations=Need.OPTIONAL)

    def __init__(self, eps: float = 0.35, disagreement_threshold: float = 0.45, n_neighbors: int = 10,
                 min_class_size: int = 10):
        self.eps = eps
        self.disagreement_threshold = disagreement_threshold
        self.n_neighbors = n_neighbors
        self.min_class_size = min_class_size

    def _representations(self, X: np.ndarray, model: Any) -> np.ndarray:
        m = as_model(model)
        if m is not None and provides(m, "activations"):
            return np.asarray(m.features(X), dtype=np.float64)
        return X

    def _class_scores(self, R: np.ndarray) -> np.ndarray:
        """Outlier score of each representation of one class: squared top-singular-vector projection."""
        Rc = R - R.mean(axis=0)
        _, _, vt = np.linalg.svd(Rc, full_matrices=False)
        return (Rc @ vt[0]) ** 2

    def _verdict_views(self, R: np.ndarray) -> list[np.ndarray]:
        """Further per-class outlier scores whose top samples' label consistency is averaged into the
        verdict (a second view steadies it when the top samples are few); none by default."""
        return []

    def _inspect(self, X: np.ndarray, y: np.ndarray, model: Any) -> Report:
        if not 0 < self.eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {self.eps}")
        from sklearn.neighbors import NearestNeighbors

        R = self._representations(X, model)
        k_nn = min(self.n_neighbors + 1, len(X))
        _, ind = NearestNeighbors(n_neighbors=k_nn).fit(X).kneighbors(X)
        other = (y[ind[:, 1:]] != y[:, None]).mean(axis=1)
        scores = np.zeros(len(X))
        ratios: dict[int, float] = {}
        majority: dict[int, bool] = {}
        for label in np.unique(y):
            idx = np.flatnonzero(y == label)
            if len(idx) < self.min_class_size:
                continue
            s = self._class_scores(R[idx])
            order = np.argsort(s)
            n_top = max(1, int(round(VERDICT_SHARE * len(idx))))
            high, low = float(other[idx[order[-n_top:]]].mean()), float(other[idx[order[:n_top]]].mean())
            views = [high] + [float(other[idx[np.argsort(v)[-n_top:]]].mean()) for v in self._verdict_views(R[idx])]
            high = float(np.mean(views))
            # When the poisons are the class's majority (past the breakdown point of the robust
            # fit), the fit centres on them: the *least* outlying samples are the label-inconsistent
            # ones, so the score is reversed for this class.
            majority[int(label)] = low > high and low > self.disagreement_threshold
            scores[idx] = s.max() - s if majority[int(label)] else s
            ratios[int(label)] = max(high, low) if majority[int(label)] else high
        target = max(ratios, key=ratios.get) if ratios else None
        ratio = ratios.get(target, 0.0) if target is not None else 0.0
        suspicious = ratio > self.disagreement_threshold
        flagged = np.array([], dtype=int)
        if suspicious:
            idx = np.flatnonzero(y == target)
            k = min(len(idx), max(1, int(round(1.5 * self.eps * len(idx)))))
            flagged = np.sort(idx[np.argsort(scores[idx])[-k:]])
        return Report(detector=self.name, scores=scores, flagged=flagged,
                      target_class=int(target) if suspicious else None, suspicious=bool(suspicious),
                      score=ratio, threshold=float(self.disagreement_threshold),
                      details={"n_samples": int(len(X)), "label_disagreement": round(ratio, 3),
                               "poison_majority": bool(suspicious and majority.get(target, False))})
