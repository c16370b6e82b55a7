"""Every CLI command answers misuse with one ``error:`` line naming the problem and exit status 2,
never a traceback (the error boundary in cli/main.py)."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from kizashi.cli.main import main

KIZASHI = [sys.executable, "-m", "kizashi.cli.main"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    t = tmp_path_factory.mktemp("misuse")
    (t / "adir").mkdir()
    (t / "syntax.yaml").write_text("sinks: [ {name: a\n")
    (t / "python.yaml").write_text("sinks: !!python/object/apply:os.system ['echo pwned']\n")
    (t / "list.yaml").write_text("- name: a\n  type: file\n")
    (t / "as-map.yaml").write_text("sinks: {name: a, type: file}\n")
    (t / "notmodel.pkl").write_text("hello")
    (t / "e.jsonl").write_text("")
    np.savez(t / "clean.npz", X=np.zeros((10, 64)), y=np.zeros(10))
    return t


def db(t):
    return ["--db", f"sqlite:///{t / 'k.db'}"]


#: (id, arguments given the temp folder, what the error line must name)
CASES = [
    ("export-out-is-dir", lambda t: ["export", "cef", *db(t), "--out", str(t / "adir")], "Is a directory"),
    ("export-out-no-parent", lambda t: ["export", "cef", *db(t), "--out", str(t / "nope" / "x.cef")],
     "No such file"),
    ("export-bad-format", lambda t: ["export", "xml", *db(t)], "xml"),
    ("db-unknown-scheme", lambda t: ["alerts", "list", "--db", "foo://bar"], "cannot open the store"),
    ("db-missing-folder", lambda t: ["alerts", "list", "--db", f"sqlite:///{t / 'nope' / 'k.db'}"],
     "cannot open the store"),
    ("db-unreachable-pg", lambda t: ["alerts", "list", "--db", "postgresql://u:secret@127.0.0.1:1/x"],
     "cannot open the store"),
    ("alerts-bad-since", lambda t: ["alerts", "list", "--since", "yesterday", *db(t)], "--since"),
    ("alerts-bad-format", lambda t: ["alerts", "list", "--format", "xml", *db(t)], "--format"),
    ("alerts-show-unknown", lambda t: ["alerts", "show", "nope", *db(t)], "no alert"),
    ("ingest-dir", lambda t: ["ingest", str(t / "adir"), *db(t)], "is a directory"),
    ("ingest-missing", lambda t: ["ingest", str(t / "missing.jsonl"), *db(t)], "no such file"),
    ("ingest-rules-missing", lambda t: ["ingest", str(t / "e.jsonl"), "--rules", str(t / "norules"), *db(t)],
     "norules"),
    ("ingest-mapping-syntax", lambda t: ["ingest", str(t / "e.jsonl"), "--mapping", str(t / "syntax.yaml"), *db(t)],
     "syntax.yaml"),
    ("ingest-mapping-python-tag",
     lambda t: ["ingest", str(t / "e.jsonl"), "--mapping", str(t / "python.yaml"), *db(t)], "python"),
    ("ingest-bad-format", lambda t: ["ingest", str(t / "e.jsonl"), "--format", "xml", *db(t)], "--format"),
    ("ingest-bad-floor", lambda t: ["ingest", str(t / "e.jsonl"), "--time-floor", "never", *db(t)], "--time-floor"),
    ("ingest-negative-skew", lambda t: ["ingest", str(t / "e.jsonl"), "--max-skew", "-1", *db(t)], "--max-skew"),
    ("deliver-yaml-syntax", lambda t: ["deliver", "--sinks", str(t / "syntax.yaml"), *db(t)], "not valid YAML"),
    ("deliver-python-tag", lambda t: ["deliver", "--sinks", str(t / "python.yaml"), *db(t)], "python"),
    ("deliver-top-level-list", lambda t: ["deliver", "--sinks", str(t / "list.yaml"), *db(t)], "sinks"),
    ("deliver-sinks-as-mapping", lambda t: ["deliver", "--sinks", str(t / "as-map.yaml"), *db(t)], "sinks"),
    ("deliver-missing", lambda t: ["deliver", "--sinks", str(t / "missing.yaml"), *db(t)], "No such file"),
    ("serve-port-range", lambda t: ["serve", "--port", "70000", *db(t)], "--port"),
    ("scan-model-not-a-model",
     lambda t: ["scan-model", str(t / "notmodel.pkl"), "--clean", str(t / "clean.npz")], "cannot load model"),
    ("scan-data-missing", lambda t: ["scan-data", str(t / "missing.npz")], "missing.npz"),
    ("rules-check-missing", lambda t: ["rules", "check", str(t / "norules")], "norules"),
    ("atlas-unknown", lambda t: ["atlas", "show", "AML.T9999"], "AML.T9999"),
    ("catalog-bad-stage", lambda t: ["catalog", "--stage", "late"], "--stage"),
    ("schema-bad-kind", lambda t: ["schema", "nope"], "nope"),
    ("demo-out-under-a-file", lambda t: ["demo", "--quick", "--out", str(t / "e.jsonl" / "x")], "Not a directory"),
    ("unknown-option", lambda t: ["ingest", "--bogus"], "--bogus"),
    ("flink-missing-events", lambda t: ["flink", "run", "--events", str(t / "missing.jsonl")], "missing.jsonl"),
    ("flink-bad-mode", lambda t: ["flink", "run", "--events", str(t / "e.jsonl"), "--mode", "batch"], "--mode"),
    ("flink-bad-bundle", lambda t: ["flink", "run", "--events", str(t / "e.jsonl"), "--bundle-size", "0"],
     "--bundle-size"),
]


def assert_one_error_line(returncode, stderr, stdout, names):
    assert returncode == 2, (returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert names in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout
    assert "secret" not in stderr  # a database password is never echoed


@pytest.mark.parametrize(("args", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_misuse_is_one_error_line_and_status_2(files, args, names, capsys):
    """In process, through the console script's own entry point (an escaping exception fails the test)."""
    with pytest.raises(SystemExit) as exit_:
        main(args(files))
    out = capsys.readouterr()
    assert_one_error_line(exit_.value.code, out.err, out.out, names)


def test_console_script_misuse_has_no_traceback(files):
    r = subprocess.run(KIZASHI + ["ingest", str(files / "adir"), *db(files)], capture_output=True, text=True,
                       timeout=120)
    assert_one_error_line(r.returncode, r.stderr, r.stdout, "is a directory")


def test_serve_on_a_port_in_use_is_one_error_line(files):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(KIZASHI + ["serve", "--port", str(port), *db(files)], capture_output=True, text=True,
                           timeout=120)
    assert_one_error_line(r.returncode, r.stderr, r.stdout, "in use")
