"""SPECTRE (Hayase, Kong, Somani, Oh, "SPECTRE: Defending Against Backdoor Attacks Using Robust
Statistics", ICML 2021).

Per label, the learned representations are reduced to their top ``n_components`` principal
directions, whitened with a *robust* covariance estimate (so that the poisons do not hide inside
the estimated spread), and scored with the quantum-entropy (QUE) score: with whitened points
``w_i`` and their covariance ``S``, ``Q = exp(alpha * (S - I) / (||S||_2 - 1))`` and
``score_i = w_i^T Q w_i / tr(Q)``; the ``1.5 * eps`` highest scores per class are removed.

Simplifications: the paper estimates the poison count and uses a robust mean/covariance from a
filtering algorithm; here the robust covariance is scikit-learn's Minimum Covariance Determinant
(seeded), ``eps`` is a parameter, and the verdict (which class is the backdoor target) reuses
``spectral_signature``'s label-consistency check of the top-scored samples, averaged over the QUE
ranking and the plain spectral-signature ranking (alone, the QUE ranking also puts a clean class's
few ambiguous digits on top). Deterministic. Measured verdicts: docs/detectors.md.

Adapters: as spectral_signature.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import expm

from .base import register
from .spectral_signature import SpectralSignature


@register("spectre")
class Spectre(SpectralSignature):
    method = "hayase2021-spectre"

    def __init__(self, eps: float = 0.35, disagreement_threshold: float = 0.4, n_neighbors: int = 10,
                 min_class_size: int = 10, n_components: int = 8, alpha: float = 4.0, random_state: int = 0):
        super().__init__(eps=eps, disagreement_threshold=disagreement_threshold, n_neighbors=n_neighbors,
                         min_class_size=min_class_size)
        self.n_components = n_components
        self.alpha = alpha
        self.random_state = random_state

    def _verdict_views(self, R: np.ndarray) -> list[np.ndarray]:
        # QUE scores rank a clean class's ambiguous samples (other digits' look-alikes) high too, so
        # the verdict also asks the plain spectral-signature ranking (its label consistency is averaged).
        return [SpectralSignature._class_scores(self, R)]

    def _class_scores(self, R: np.ndarray) -> np.ndarray:
        from sklearn.covariance import MinCovDet

        Rc = R - R.mean(axis=0)
        _, _, vt = np.linalg.svd(Rc, full_matrices=False)
        k = max(1, min(self.n_components, len(R) - 2, vt.shape[0]))
        Z = Rc @ vt[:k].T
        mcd = MinCovDet(random_state=self.random_state).fit(Z)
        evals, evecs = np.linalg.eigh(mcd.covariance_)
        W = (Z - mcd.location_) @ evecs / np.sqrt(np.maximum(evals, 1e-12))
        S = np.cov(W, rowvar=False).reshape(k, k)
        norm = max(float(np.linalg.norm(S, 2)) - 1.0, 1e-6)
        Q = expm(self.alpha * (S - np.eye(k)) / norm)
        return np.einsum("ij,jk,ik->i", W, Q, W) / float(np.trace(Q))
