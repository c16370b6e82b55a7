"""Held-out relabelling against accuracy-degrading (denial-of-service) poisoning, after Müller,
Roschmann, Böttinger, "Defending Against Adversarial Denial-of-Service Data Poisoning Attacks"
(ACSAC DYNAMICS workshop 2020, arXiv:2104.06744, 2021).

The paper rejects clustering / anomaly-score defences (curse of dimensionality, arbitrary anomaly
thresholds) and instead extracts *generalised* information from the training data, so that each
sample is judged by what the unpoisoned majority of the data says about it. Implemented here as
cross-fitting: the data are split into ``n_folds`` stratified folds; a clone of the classifier is
trained on the other folds and predicts the held-out fold, so no sample ever vouches for itself
(a poison's own label never enters the model that judges it). This is repeated ``n_repeats``
times with different seeded splits. A sample is flagged when the held-out models disagree with its
label in more than ``vote`` of the repeats -- a majority vote, not a tuned anomaly threshold.
``scores`` are the mean held-out probability of *not* being the given label (one-hot predictions
for classifiers without ``predict_proba``), so higher = more suspicious.

Dataset verdict: a clean dataset still has a few held-out errors (ambiguous digits), so the
dataset is ``suspicious`` when the share of such label-inconsistent samples exceeds
``max_clean_share`` (default 0.02; the default RBF SVC finds about 1.2% of clean 8x8 digits); only
a suspicious dataset gets ``flagged`` indices (their count is always in ``details``). ``target_class`` is reported when more than
half of the flagged samples (at least 3) carry one label, i.e. a targeted flip towards one class;
for untargeted accuracy degradation it stays ``None``.

Model: ``inspect(..., model=est)`` clones the scikit-learn estimator ``est`` (fitted or not; its
hyper-parameters are reused, its weights are not, since a model fitted on the suspect data has
seen the poisons); without one an RBF ``SVC`` is used.

Simplifications and deviations (honest list): only the paper's abstract was available to us, so
the exact procedure of the paper (its models, feature extraction and decision rule) may differ;
the principle implemented is "judge every sample by models that did not see it, trained on the
rest of the data" with a majority vote. The verdict threshold ``max_clean_share`` is a kizashi
addition. Limits measured on digits: coherent flips of whole data modes (Tavallali et al.'s
cluster-flip attack) are learned by the held-out models from the remaining members of the same
mode and are mostly missed (recall 0-0.3). Seeded (fold splits, ``random_state`` of the clone
when it has one) and deterministic.

Adapters: scikit-learn estimators only (it retrains clones on folds); framework models are refused with a message.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import DatasetDetector, Need, Needs, Report, register


def label_classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classes of ``y`` and the class index of each sample (at least two classes)."""
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("y must contain at least two classes")
    return classes, yi


def label_report(detector: DatasetDetector, y: np.ndarray, scores: np.ndarray, flagged: np.ndarray,
                 max_share: float, details: dict[str, Any]) -> Report:
    """Report shared by the label-consistency detectors: the dataset is suspicious when the share of
    label-inconsistent samples exceeds ``max_share``; only then are they flagged (a clean dataset
    raises no event), with the target class when most of them (at least 3) carry one label."""
    share = len(flagged) / len(y)
    suspicious = share > max_share
    target = None
    if suspicious and len(flagged) >= 3:
        labels, counts = np.unique(y[flagged], return_counts=True)
        if counts.max() > len(flagged) / 2:
            target = labels[int(np.argmax(counts))].item()
    details = {"n_samples": int(len(y)), "n_inconsistent": int(len(flagged)), "inconsistent_share": round(share, 4),
               **details}
    return Report(detector=detector.name, scores=scores,
                  flagged=flagged if suspicious else np.array([], dtype=np.int64),
                  target_class=target, suspicious=bool(suspicious),
                  score=float(share), threshold=float(max_share), details=details)

@register("dos_poison")
class DoSPoison(DatasetDetector):
    method = "muller2021-dos-poisoning"
    needs = Needs(labels=Need.REQUIRED, model=Need.OPTIONAL)

    def __init__(self, n_folds: int = 5, n_repeats: int = 3, vote: float = 0.5, max_clean_share: float = 0.02,
                 random_state: int = 0):
        self.n_folds = n_folds
        self.n_repeats = n_repeats
        self.vote = vote
        self.max_clean_share = max_clean_share
        self.random_state = random_state

    def _estimator(self, model: Any) -> Any:
        from sklearn.base import clone

        if model is None:
            from sklearn.svm import SVC

            return SVC(kernel="rbf")
        if not hasattr(model, "get_params") or not hasattr(model, "fit"):
            raise TypeError(f"dos_poison retrains the model on folds: pass a scikit-learn estimator, "
                            f"not {type(model).__name__}")
        est = clone(model)
        if "random_state" in est.get_params():
            est.set_params(random_state=self.random_state)
        return est

    def _inspect(self, X: np.ndarray, y: np.ndarray, model: Any) -> Report:
        classes, yi = label_classes(y)
        if self.n_folds < 2 or self.n_repeats < 1:
            raise ValueError(f"n_folds must be >= 2 and n_repeats >= 1; got {self.n_folds}, {self.n_repeats}")
        if not 0 <= self.vote < 1:
            raise ValueError(f"vote must be in [0, 1), got {self.vote}")
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold

        est = self._estimator(model)
        k, n = int(self.n_folds), len(y)
        if n < 2 * k:
            raise ValueError(f"dos_poison needs at least {2 * k} samples for {k} folds; got {n}")
        wrong = np.zeros(n)
        not_label = np.zeros(n)
        for r in range(self.n_repeats):
            with warnings.catch_warnings():  # a class smaller than k folds is fine here
                warnings.simplefilter("ignore", UserWarning)
                splits = list(StratifiedKFold(k, shuffle=True, random_state=self.random_state + r).split(X, yi))
            for train, test in splits:
                m = clone(est).fit(X[train], yi[train])
                pred = np.asarray(m.predict(X[test]))
                wrong[test] += pred != yi[test]
                if hasattr(m, "predict_proba"):
                    P = np.zeros((len(test), len(classes)))
                    P[:, np.asarray(m.classes_, dtype=int)] = m.predict_proba(X[test])
                    not_label[test] += 1.0 - P[np.arange(len(test)), yi[test]]
                else:
                    not_label[test] += pred != yi[test]
        votes = wrong / self.n_repeats
        scores = not_label / self.n_repeats
        flagged = np.flatnonzero(votes > self.vote).astype(np.int64)
        return label_report(self, y, scores, flagged, self.max_clean_share,
                            {"n_folds": int(k), "n_repeats": int(self.n_repeats),
                             "estimator": type(est).__name__})

