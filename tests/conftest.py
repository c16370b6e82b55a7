"""Shared fixtures. ``../shared`` (reference data: ATLAS 5.6.0, the seed) sits beside the project.

``postgresql_url`` starts a throwaway PostgreSQL cluster for the session (initdb + ``pg_ctl`` on a
temp dir, the way pytest-postgresql does); ``scripts/provision.sh`` installs the server binaries.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
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

def _pg_bindir() -> Path:
    """Newest Debian PostgreSQL (/usr/lib/postgresql/<v>/bin), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    exe = found[-1] if found else shutil.which("initdb")
    if not exe:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are needed: Debian package postgresql; "
                    "scripts/provision.sh installs it")
    return Path(exe).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a database on a PostgreSQL server for this session.

    ``KIZASHI_TEST_PG_URL`` points at an external server instead. Otherwise a new cluster is made in a
    temp dir and started on 127.0.0.1 on a free port (unix socket in that dir), and removed at the end.
    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    """
    if os.environ.get("KIZASHI_TEST_PG_URL"):
        yield os.environ["KIZASHI_TEST_PG_URL"]
        return
    bindir = _pg_bindir()
    owner = "postgres" if os.geteuid() == 0 else None
    if owner:
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            pytest.fail("running as root: initdb needs the unprivileged 'postgres' user (Debian package postgresql)")
    as_owner = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", owner, "--"] if owner else []
    base = Path(tempfile.mkdtemp(prefix="kizashi-pg-"))
    data, log = base / "data", base / "server.log"
    password = secrets.token_hex(16)
    (base / "pwfile").write_text(password + "\n")
    if owner:
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chown(base / "pwfile", pw.pw_uid, pw.pw_gid)

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_owner, *cmd], cwd=base, capture_output=True, text=True)

    def pg_ctl(*args: str) -> subprocess.CompletedProcess:
        return run(str(bindir / "pg_ctl"), "-D", str(data), *args)

    started = False
    try:
        r = run(str(bindir / "initdb"), "-D", str(data), "-U", "kizashi", f"--pwfile={base / 'pwfile'}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        if r.returncode:
            pytest.fail(f"initdb failed (exit {r.returncode}): {r.stderr[-2000:]}")
        for _ in range(3):  # a free port can be taken between probing and binding: try another
            port = _free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off")
            r = pg_ctl("-l", str(log), "-w", "-t", "60", "-o", opts, "start")
            if r.returncode == 0:
                started = True
                break
        if not started:
            pytest.fail(f"PostgreSQL did not start (pg_ctl exit {r.returncode}): {r.stderr[-1000:]}\n"
                        + (log.read_text()[-2000:] if log.exists() else ""))
        server = f"postgresql+psycopg://kizashi:{password}@127.0.0.1:{port}"
        from sqlalchemy import create_engine, text
        eng = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text("CREATE DATABASE kizashi_test"))
        eng.dispose()
        yield f"{server}/kizashi_test"
    finally:
        if started:
            pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


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
