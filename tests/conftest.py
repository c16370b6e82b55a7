"""Shared fixtures. ``../shared`` (reference data: ATLAS 5.6.0, the seed) sits beside the project.

``postgresql_url`` starts a throwaway PostgreSQL cluster for the session (initdb + ``pg_ctl`` on a
temp dir, the way pytest-postgresql does); ``scripts/provision.sh`` installs the server binaries.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

# The detectors train small MLPs (8x8 digits): multi-threaded BLAS makes them 3-4 times slower on
# a 2-core machine (thread hand-off costs more than the matrix products), so the suite runs
# single-threaded, and so do the CLI subprocesses it starts.
threadpool_limits(1)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KIZASHI_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"reference data folder {SHARED} missing (set KIZASHI_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def atlas_yaml(shared_dir: Path) -> Path:
    return shared_dir / "atlas" / "ATLAS.yaml"


@pytest.fixture(scope="session")
def seed_text(shared_dir: Path) -> str:
    return (shared_dir / "seed" / "ml-security-guideline-appendix-detection.ja.md").read_text(encoding="utf-8")



@pytest.fixture(scope="session")
def rsyslogd_path() -> str:
    """rsyslogd (Debian installs it in /usr/sbin, which a non-root PATH often lacks)."""
    exe = shutil.which("rsyslogd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if not exe:
        pytest.fail("rsyslogd is needed (Debian package rsyslog; scripts/provision.sh installs it)")
    return exe

# ---- PostgreSQL: a throwaway cluster per test session ---------------------------------------------

@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """SQLAlchemy URL of a database on a throwaway PostgreSQL server for this session
    (kizashi.scenarios.postgres); fails, never skips, when the server cannot start."""
    from kizashi.scenarios.postgres import PostgresUnavailable, throwaway_postgres

    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))


# -- BadNets-poisoned digits and models trained on them (data and model detector tests) -----------


@pytest.fixture(scope="module")
def poisoned():
    """Digits with 5% BadNets (ART 4-pixel pattern, target 0): (X, y, Xp, yp, poisoned idx, model
    trained on the poisoned set, model trained on the clean set)."""
    from kizashi.scenarios.digits import load_digits01, train_mlp
    from kizashi.scenarios.poisoning import badnets

    X, y = load_digits01()
    Xp, yp, idx = badnets(X, y, 0.05)
    return X, y, Xp, yp, idx, train_mlp(Xp, yp, max_iter=300), train_mlp(X, y, max_iter=300)


@pytest.fixture(scope="module")
def backdoored_models():
    """(MLP trained on 5% BadNets digits, MLP trained on the clean ones, 397 clean held-out digits)."""
    from kizashi.scenarios.digits import load_digits01, train_mlp
    from kizashi.scenarios.poisoning import badnets

    X, y = load_digits01()
    X_tr, y_tr, X_clean = X[:1400], y[:1400], X[1400:]
    Xp, yp, _ = badnets(X_tr, y_tr, 0.05)
    return train_mlp(Xp, yp, max_iter=300), train_mlp(X_tr, y_tr, max_iter=300), X_clean
