"""Activation clustering (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava,
"Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering", SafeAI@AAAI 2019,
arXiv:1811.03728).

For each label, the last hidden layer's activations of its training samples are reduced to
``n_components`` dimensions (the paper uses ICA; PCA here, seeded) and split into two clusters by
k-means; a cluster holding at most ``size_threshold`` of its label's samples is judged poisonous
(the paper's relative-size criterion) and its samples are flagged. Unlike ART's
``ActivationDefence`` (unseeded k-means), every step is seeded, so two runs flag the same samples.
A well-known baseline beside the seed's Table 1 methods; on digits it over-flags (see
docs/detectors.md): clean classes often split into two natural writing styles too.

Adapters: a model providing activations: SklearnModel MLP, TorchModel, ArtModel(layer=...), OnnxModel(features_output=...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DatasetDetector, Need, Needs, Report, register
from .models import as_model, provides


@register("activation_clustering")
class ActivationClustering(DatasetDetector):
    method = "chen2018-activation-clustering"
    needs = Needs(labels=Need.REQUIRED, model=Need.REQUIRED, activations=Need.REQUIRED)

    def __init__(self, n_components: int = 10, size_threshold: float = 0.35, min_class_size: int = 10,
                 random_state: int = 0):
        self.n_components = n_components
        self.size_threshold = size_threshold
        self.min_class_size = min_class_size
        self.random_state = random_state

    def _inspect(self, X: np.ndarray, y: np.ndarray, model: Any) -> Report:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score

        m = as_model(model)
        if m is None or not provides(m, "activations"):
            raise ValueError("activation_clustering needs a model with hidden activations (features)")
        R = np.asarray(m.features(X), dtype=np.float64)
        scores = np.zeros(len(X))
        flagged: list[int] = []
        per_class: dict[int, float] = {}
        best, best_sil = None, -1.0
        for label in np.unique(y):
            idx = np.flatnonzero(y == label)
            if len(idx) < self.min_class_size:
                continue
            k = min(self.n_components, len(idx) - 1, R.shape[1])
            Z = PCA(k, random_state=self.random_state).fit_transform(R[idx])
            lab = KMeans(2, n_init=10, random_state=self.random_state).fit_predict(Z)
            small = int(np.argmin(np.bincount(lab, minlength=2)))
            share = float(np.mean(lab == small))
            sil = float(silhouette_score(Z, lab)) if len(set(lab)) == 2 else 0.0
            per_class[int(label)] = share
            scores[idx[lab == small]] = 1.0 - share
            if share <= self.size_threshold:
                flagged.extend(int(i) for i in idx[lab == small])
                if sil > best_sil:
                    best, best_sil = int(label), sil
        flagged_arr = np.array(sorted(flagged), dtype=int)
        return Report(detector=self.name, scores=scores, flagged=flagged_arr, target_class=best,
                      suspicious=len(flagged_arr) > 0, score=best_sil if best is not None else 0.0,
                      threshold=None,
                      details={"n_samples": int(len(X)), "classes_flagged": int(sum(
                          1 for s in per_class.values() if s <= self.size_threshold))})
