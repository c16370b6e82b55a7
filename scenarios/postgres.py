"""A throwaway PostgreSQL server for tests and benches: a new cluster in a temp dir, started with
``pg_ctl`` on 127.0.0.1 on a free port (as pytest-postgresql does), removed afterwards. Needs the
Debian package postgresql (``scripts/provision.sh`` installs it)."""

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
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The server could not be made or started (the message says why)."""


def _fail(msg: str) -> None:
    raise PostgresUnavailable(msg)


def _pg_bindir() -> Path:
    """Newest Debian PostgreSQL (/usr/lib/postgresql/<v>/bin), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    exe = found[-1] if found else shutil.which("initdb")
    if not exe:
        _fail("PostgreSQL server binaries (initdb, pg_ctl) are needed: Debian package postgresql; "
                    "scripts/provision.sh installs it")
    return Path(exe).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_postgres() -> Iterator[str]:
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
            _fail("running as root: initdb needs the unprivileged 'postgres' user (Debian package postgresql)")
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
            _fail(f"initdb failed (exit {r.returncode}): {r.stderr[-2000:]}")
        for _ in range(3):  # a free port can be taken between probing and binding: try another
            port = _free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off")
            r = pg_ctl("-l", str(log), "-w", "-t", "60", "-o", opts, "start")
            if r.returncode == 0:
                started = True
                break
        if not started:
            _fail(f"PostgreSQL did not start (pg_ctl exit {r.returncode}): {r.stderr[-1000:]}\n"
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
