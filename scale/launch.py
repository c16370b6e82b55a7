"""Start the Flink job from the main environment: PyFlink lives in its own virtual environment
(``.venv-flink``: pyflink pins its own pandas/pyarrow), so the job runs in a child process.

The interpreter is ``$KIZASHI_FLINK_PYTHON`` if set, else ``.venv-flink/bin/python`` beside the
main environment (``sys.prefix/../.venv-flink``) or at the source checkout's root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FlinkNotInstalled", "flink_python", "job_command", "read_lines", "result_order"]


class FlinkNotInstalled(RuntimeError):
    """No interpreter with PyFlink (and Java) was found."""


def flink_python() -> Path:
    env = os.environ.get("KIZASHI_FLINK_PYTHON")
    candidates = [Path(env)] if env else []
    candidates += [Path(sys.prefix).parent / ".venv-flink" / "bin" / "python",
                   Path(__file__).resolve().parents[1] / ".venv-flink" / "bin" / "python"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise FlinkNotInstalled(
        "no PyFlink environment: create it with `make flink-install` (python3 -m venv .venv-flink && "
        ".venv-flink/bin/pip install -e '.[flink]'; needs Java 17: apt-get install openjdk-17-jre-headless), "
        "or set KIZASHI_FLINK_PYTHON; tried " + ", ".join(map(str, candidates)))


def job_command(args: Sequence[str], python: Path | None = None) -> list[str]:
    """The command line running the job with ``args`` (as ``python -m kizashi.scale.flink`` takes them)."""
    return [str(python or flink_python()), "-m", "kizashi.scale.flink", *args]


def job_environment(python: Path | None = None) -> dict[str, str]:
    """The child's environment: the PyFlink interpreter's bin/ first on PATH (Python workers)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(python or flink_python()).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_job(args: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    python = flink_python()
    return subprocess.run(job_command(args, python), env=job_environment(python), **kwargs)


def read_lines(folder: str | Path, prefix: str = "results") -> list[str]:
    """Lines of the job's *finished* part files directly in ``folder`` (in-progress and pending files
    start with a dot; quarantine/ and detections/ are folders of their own)."""
    out: list[str] = []
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob(f"{prefix}*")):
        if f.is_file():
            # split on \n only: U+2028 inside a JSON string is data (splitlines would break the record)
            out += [line for line in f.read_text(encoding="utf-8").split("\n") if line.strip()]
    return out


def result_order(line: str) -> tuple:
    """Sort key of a result line: time (the match's, or the correlation's last event), type, rule, id
    (the order of ``RuleResult.sort_key``)."""
    d = json.loads(line)
    when = d.get("time") if d.get("type") == "match" else d.get("last_seen")
    return (when or "", d.get("type", ""), d.get("rule", ""), d.get("id", ""))
