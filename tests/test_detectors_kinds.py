"""Detector kinds and declared needs (issue 12): one base and one hook per kind, needs as data that
the bases enforce and the CLI reads."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from kizashi import detectors
from kizashi.cli.main import app
from kizashi.detectors.base import (
    KINDS,
    DatasetDetector,
    InputDetector,
    ModelDetector,
    Need,
    Needs,
    NotFittedError,
    Report,
    StreamDetector,
)
from typer.testing import CliRunner

BASES = {"stream": StreamDetector, "input": InputDetector, "dataset": DatasetDetector, "model": ModelDetector}
HOOKS = {"stream": "_score_one", "input": "_score", "dataset": "_inspect", "model": "_inspect_model"}


def _classes(kind: str) -> list[tuple[str, type]]:
    return [(n, detectors.get(n)) for n in detectors.available() if detectors.get(n).kind == kind]


@pytest.fixture(scope="module")
def small():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    X, y = X[:200] / 16.0, y[:200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return X, y, LogisticRegression(max_iter=200).fit(X, y)


def test_every_detector_has_one_kind_its_hook_and_needs():
    assert set(KINDS) == set(BASES)
    for name in detectors.available():
        cls = detectors.get(name)
        assert cls.kind in KINDS, name
        assert [k for k, base in BASES.items() if issubclass(cls, base)] == [cls.kind], name
        hook = HOOKS[cls.kind]
        assert getattr(cls, hook) is not getattr(BASES[cls.kind], hook), f"{name} does not implement {hook}"
        assert isinstance(cls.needs, Needs), name
        for probe in ("uses_adversarial", "requires_adversarial", "requires_model", "learns_from_trusted_data",
                      "_observe"):
            assert not hasattr(cls, probe), f"{name} still has {probe}"
    assert {cls.kind for _, cls in _classes("model")} == {"model"} and len(_classes("model")) == 3
    assert not hasattr(ModelDetector, "inspect") and not hasattr(DatasetDetector, "inspect_model")
    assert not hasattr(StreamDetector, "decision_function")


def test_needs_are_data():
    n = Needs(labels="required", model=Need.OPTIONAL)
    assert n.labels is Need.REQUIRED and n.model is Need.OPTIONAL and n.gradients is Need.NO
    assert n.required() == ("labels",) and n.optional() == ("model",)
    assert n.as_dict() == {"labels": "required", "model": "optional"}
    assert n.with_(model="no").as_dict() == {"labels": "required"}
    with pytest.raises(ValueError):
        Needs(labels="sometimes")
    with pytest.raises(AttributeError):
        n.labels = Need.NO  # frozen
    # inherited and overridden: spectre is a spectral_signature with the same needs
    assert detectors.get("spectre").needs == detectors.get("spectral_signature").needs
    assert detectors.get("top").needs.gradients is Need.REQUIRED
    assert detectors.get("b3d").needs.gradients is Need.OPTIONAL  # black-box NES without them


@pytest.mark.parametrize("name", [n for n, _ in _classes("input")])
def test_input_fit_enforces_declared_needs(small, name):
    X, y, model = small
    det = detectors.create(name)
    needs = det.needs
    if needs.model is Need.REQUIRED:
        with pytest.raises(ValueError, match="needs the protected model"):
            detectors.create(name).fit(X, y)
    if needs.adversarial_examples is Need.NO:
        with pytest.raises(ValueError, match="X_adv is not used"):
            det.fit(X, y, model=model, X_adv=X[:5])
    elif needs.adversarial_examples is Need.REQUIRED:
        with pytest.raises(ValueError, match="X_adv"):
            det.fit(X, y, model=model)


@pytest.mark.parametrize("name", [n for n, _ in _classes("dataset")])
def test_dataset_inspect_enforces_declared_needs(small, name):
    X, y, _ = small
    det = detectors.create(name)
    if det.needs.trusted_data is Need.REQUIRED:
        with pytest.raises(NotFittedError):
            det.inspect(X, y)
        with pytest.raises(ValueError, match="trusted"):
            det.fit()
        return
    assert det.fit() is det and not hasattr(det, "n_features_in_")  # nothing to learn
    if det.needs.model is Need.REQUIRED:
        with pytest.raises(ValueError, match="needs the model"):
            det.inspect(X, y)
    with pytest.raises(ValueError, match="one label per sample"):
        det.inspect(X, y[:-1])


def test_reports_say_what_they_are_about(small):
    X, y, _ = small
    rep = detectors.create("srnn").inspect(X, y)
    assert rep.subject == "samples" and rep.scores.shape == (len(X),)
    verdict = Report(detector="b3d", scores=np.ones(10), flagged=np.array([], dtype=int), target_class=3,
                     suspicious=True, score=2.5, threshold=1.8, subject="model")
    [ev] = verdict.to_events(detectors.create("b3d"))
    assert "flagged_indices" not in ev.evidence and ev.evidence["target_class"] == 3 and ev.score == 2.5
    with pytest.raises(ValueError, match="flags no samples"):
        Report(detector="b3d", scores=np.ones(10), flagged=np.array([0]), subject="model")
    with pytest.raises(ValueError, match="subject"):
        Report(detector="x", scores=np.ones(1), flagged=np.array([]), subject="dataset")


def test_cli_lists_kinds_and_needs_and_checks_kinds(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["detectors", "list", "--format", "json"])
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert {r["kind"] for r in rows.values()} == set(KINDS)
    for name, row in rows.items():
        assert row["needs"] == detectors.get(name).needs.as_dict()
    assert rows["top"]["needs"]["gradients"] == "required" and rows["query_rate"]["needs"]["query_times"] == "required"
    table = runner.invoke(app, ["detectors", "list"]).stdout
    assert "needs: labels, trusted_data" in next(line for line in table.splitlines() if line.startswith("depois"))
    np.savez(tmp_path / "d.npz", X=np.zeros((5, 4)), y=np.arange(5))
    r = runner.invoke(app, ["scan-data", str(tmp_path / "d.npz"), "--detector", "b3d"])
    assert r.exit_code == 2 and "is a model detector" in r.stderr
    r = runner.invoke(app, ["scan-data", str(tmp_path / "d.npz"), "--detector", "activation_clustering"])
    assert r.exit_code == 2 and "--model" in r.stderr


def test_model_adapters_declare_what_they_provide(small):
    from kizashi.detectors.models import as_model, provides
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    X, y, lr = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((8,), max_iter=20, random_state=0).fit(X, y)
    svc = SVC().fit(X, y)  # probabilities: a softmax of its decision function
    assert as_model(mlp).provides == {"probabilities", "logits", "activations", "gradients"}
    assert as_model(lr).provides == {"probabilities", "logits", "gradients"}
    assert as_model(svc).provides == {"probabilities", "logits"}  # kernel SVC: no input gradient

    class BlackBox:
        def predict_proba(self, X):
            return as_model(svc).predict_proba(X)

    assert [o for o in ("probabilities", "logits", "activations", "gradients") if provides(BlackBox(), o)] == [
        "probabilities"]
    with pytest.raises(ValueError, match="unknown model output"):
        provides(lr, "weights")
    with pytest.raises(ValueError, match="input gradients"):  # declared need, checked before any work
        detectors.create("top").inspect_model(svc, X[:20])
