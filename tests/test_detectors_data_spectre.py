"""spectre on a real BadNets poisoning (ART PoisoningAttackBackdoor) of digits at 5%."""

from __future__ import annotations

import numpy as np
from kizashi.detectors import create


def test_spectre_flags_poisons_with_few_false_flags(poisoned):
    X, y, Xp, yp, idx, model, _ = poisoned
    det = create("spectre").set_context(model_id="digits")
    rep = det.inspect(Xp, yp, model=model)
    assert rep.suspicious and rep.target_class == 0
    assert len(np.intersect1d(rep.flagged, idx)) / len(idx) >= 0.9
    assert len(np.setdiff1d(rep.flagged, idx)) / (len(y) - len(idx)) < 0.05
    ev = rep.to_events(det)
    assert len(ev) == 1 and ev[0].detector.method == "hayase2021-spectre"
    again = create("spectre").inspect(Xp, yp, model=model)
    np.testing.assert_array_equal(rep.flagged, again.flagged)


def test_spectre_clean_not_suspicious(poisoned):
    X, y, *_, clean_model = poisoned
    rep = create("spectre").inspect(X, y, model=clean_model)
    assert not rep.suspicious and len(rep.flagged) == 0
