"""Model extraction with adversarial-robustness-toolbox through the inference API (CopycatCNN,
KnockoffNets, random-step and Jacobian-augmentation query rounds), and stealing a proxy from a
victim's answers for transfer attacks."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .api import InferenceAPI
from .art_setup import quiet_art

EXTRACTION_ATTACKS = ("copycat-natural", "knockoff-natural", "knockoff-ood", "copycat-uniform", "copycat-rnd",
                      "jbda")
#: extraction attacks whose queries are synthetic (not natural images)
SYNTHETIC_EXTRACTION = ("copycat-uniform", "copycat-rnd", "jbda")


def thief(seed: int):
    """The thieved model: a scikit-learn logistic regression wrapped for ART (has class gradients)."""
    from art.estimators.classification.scikitlearn import ScikitlearnLogisticRegression
    from sklearn.linear_model import LogisticRegression

    class ThiefLogisticRegression(LogisticRegression):
        """ART's extraction attacks pass neural-net fit options; a logistic regression ignores them."""

        def fit(self, X, y, sample_weight=None, **_nn_options):
            return super().fit(X, y, sample_weight=sample_weight)

    return ScikitlearnLogisticRegression(ThiefLogisticRegression(max_iter=500, random_state=seed),
                                         clip_values=(0.0, 1.0))


def steal_proxy(victim: Any, X_query: np.ndarray, proxy: Any = None) -> Any:
    """Model extraction: fit ``proxy`` (default a logistic regression) on the victim's predicted labels."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    proxy = clone(proxy) if proxy is not None else LogisticRegression(max_iter=2000, C=1.0)
    return proxy.fit(X_query, victim.predict(X_query))


def ood_natural_pool(n: int, *, seed: int = 0, side: int = 8) -> np.ndarray:
    """Natural images that are not digits: ``side`` x ``side`` grey patches (4x4-pixel means of a
    ``4 * side`` square crop) of scikit-learn's bundled sample photos, inverted and scaled to [0, 1]
    (the "natural out-of-distribution" pool of Knockoff Nets)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [img.mean(axis=2) / 255.0 for img in load_sample_images().images]
    crop = 4 * side
    out = np.empty((n, side * side))
    for i in range(n):
        p = photos[i % len(photos)]
        r, c = rng.integers(0, p.shape[0] - crop), rng.integers(0, p.shape[1] - crop)
        patch = p[r:r + crop, c:c + crop].reshape(side, 4, side, 4).mean(axis=(1, 3))  # 4*side -> side
        out[i] = 1.0 - patch.ravel()
    return out


def run_extraction(api: InferenceAPI, attack: str, X_natural: np.ndarray, *, account: str, n_queries: int = 300,
                   rate: float = 2.0, start: float = 0.0, seed: int = 0, X_test: np.ndarray | None = None,
                   y_test: np.ndarray | None = None) -> dict[str, Any]:
    """Run one ART model-extraction attack through the API as ``account`` with ``n_queries`` queries.

    * ``copycat-natural``: CopycatCNN on the attacker's own natural digits (``X_natural``).
    * ``knockoff-natural``: KnockoffNets (random strategy) on the same natural digits.
    * ``knockoff-ood``: KnockoffNets on natural non-digit photos (:func:`ood_natural_pool`).
    * ``copycat-uniform``: CopycatCNN on uniform noise images (synthetic queries).
    * ``copycat-rnd``: a small natural seed set, then rounds of ``x + lambda * random sign``
      (Juuti et al.'s T-RND-style random synthetic queries), each round queried through CopycatCNN.
    * ``jbda``: Papernot et al.'s Jacobian-based dataset augmentation: the same rounds with
      ``x + lambda * sign(grad)`` of the thieved model (ART ``class_gradient``); with ``copycat-rnd``
      the synthetic-query setting PRADA targets.

    Returns the queries sent and the thieved model's agreement with the victim on ``X_test``.
    """
    quiet_art()
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    clf = api.art_classifier(account, rate=rate, start=start, seed=seed, flat=True)
    base = api.count(account)
    stolen, before = thief(seed), len(api.log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _extract(api, attack, clf, stolen, X_natural, n_queries=n_queries, rng=rng, seed=seed)
        except ValueError:
            # a logistic-regression thief cannot fit answers that are all one label (a CNN can
            # answer uniform noise that way): the attack sent its queries and stole a constant
            answers = {r.label for r in api.log[before:] if r.account == account}
            if len(answers) != 1:
                raise
            stolen = None
    out: dict[str, Any] = {"attack": attack, "account": account, "queries": api.count(account) - base}
    if stolen is None:
        out["stolen"] = f"constant label {next(iter(answers))} (every answer had that label)"
    if X_test is not None:
        if stolen is None:
            mine = np.full(len(X_test), next(iter(answers)))
        else:
            classes = np.asarray(stolen.model.classes_)  # the thief may have seen fewer than all classes
            mine = classes[np.asarray(stolen.predict(X_test.astype(np.float32))).argmax(axis=1)]
        out["agreement"] = float(np.mean(mine == api.model.predict(X_test)))
    return out


def _extract(api: InferenceAPI, attack: str, clf: Any, stolen: Any, X_natural: np.ndarray, *, n_queries: int,
             rng: np.random.Generator, seed: int) -> None:
    """Send the attack's queries through ``clf``; ART fits ``stolen`` in place on the answers."""
    from art.attacks.extraction import CopycatCNN, KnockoffNets

    if attack in ("copycat-natural", "copycat-uniform"):
        pool = (X_natural if attack == "copycat-natural" else rng.uniform(0, 1, (n_queries, api.n_features)))
        n = min(n_queries, len(pool))
        CopycatCNN(clf, nb_stolen=n, nb_epochs=1, batch_size_query=16).extract(
            pool.astype(np.float32), thieved_classifier=stolen)
    elif attack in ("knockoff-natural", "knockoff-ood"):
        pool = X_natural if attack == "knockoff-natural" else ood_natural_pool(
            max(n_queries, 64), seed=seed, side=api.input_shape[-1])
        n = min(n_queries, len(pool))
        KnockoffNets(clf, nb_stolen=n, nb_epochs=1, batch_size_query=16, sampling_strategy="random",
                     verbose=False).extract(pool.astype(np.float32), thieved_classifier=stolen)
    elif attack in ("jbda", "copycat-rnd"):
        query_rounds(api, clf, stolen, X_natural, n_queries=n_queries, rng=rng, jacobian=attack == "jbda")
    else:
        raise ValueError(f"unknown extraction attack {attack!r}; known: {', '.join(EXTRACTION_ATTACKS)}")


def query_rounds(api: InferenceAPI, clf: Any, stolen: Any, X_natural: np.ndarray, *, n_queries: int,
                 rng: np.random.Generator, jacobian: bool, n_seed: int = 20, lam: float = 0.1) -> int:
    """Synthetic-query extraction: ``n_seed`` natural images, then rounds of ``x + lam * sign(d)`` with
    ``d`` random (T-RND) or the thieved model's class gradient (JbDA), each round sent through ART
    ``CopycatCNN`` via ``clf``; ``stolen`` is fitted on every answer. Returns the queries sent."""
    from art.attacks.extraction import CopycatCNN

    seed_idx = rng.choice(len(X_natural), size=min(n_seed, len(X_natural), n_queries), replace=False)
    new = X_natural[seed_idx].astype(np.float32)
    X_all, y_all = np.empty((0, api.n_features), np.float32), np.empty((0, api.n_classes), np.float32)
    sent = 0
    while True:
        new = new[: n_queries - sent]
        if len(new) == 0:
            break
        before = len(api.log)
        # ART CopycatCNN sends the round's queries through the API and fits a throwaway thief on them
        CopycatCNN(clf, nb_stolen=len(new), nb_epochs=1, batch_size_query=16).extract(
            new, thieved_classifier=thief(0))
        recs = api.log[before:]
        sent += len(recs)
        X_round = np.stack([r.x for r in recs]).astype(np.float32)
        y_round = np.eye(api.n_classes, dtype=np.float32)[[r.label for r in recs]]
        X_all, y_all = np.vstack([X_all, X_round]), np.vstack([y_all, y_round])
        if not jacobian or len(np.unique(y_all.argmax(1))) < 2:  # random step (or too few classes to fit)
            new = np.clip(X_round + lam * np.sign(rng.normal(size=X_round.shape)), 0, 1).astype(np.float32)
            continue
        stolen.fit(X_all, y_all)
        labels = np.searchsorted(stolen.model.classes_, y_round.argmax(1))  # ART wants the thief's class index
        grad = stolen.class_gradient(X_round, label=labels).reshape(len(X_round), -1)
        new = np.clip(X_round + lam * np.sign(grad), 0.0, 1.0).astype(np.float32)
    if len(np.unique(y_all.argmax(1))) >= 2:
        stolen.fit(X_all, y_all)
    return sent
