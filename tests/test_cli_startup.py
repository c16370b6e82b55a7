"""Start-up cost: the CLI imports what a command uses when it uses it (issue 17, item 4).

Each check runs in a fresh interpreter and reads ``sys.modules``: importing ``kizashi.cli.main``
(what ``kizashi --help`` does) must not load the heavy libraries, and ``kizashi rules eval`` on a
one-event file must not load the store's or the batch evaluator's (timings live in docs/rules.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "sqlalchemy", "sklearn", "httpx", "rich", "torch", "scipy", "matplotlib", "pydantic",
         "sigma.backends", "numpy", "starlette", "uvicorn", "pyflink")


def _loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport sys, json\nprint(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_main_imports_no_heavy_library():
    assert _loaded_after("import kizashi.cli.main") == []


def test_rules_eval_loads_neither_pandas_nor_the_store(tmp_path):
    events = tmp_path / "one.jsonl"
    events.write_text(json.dumps({"id": "e1", "time": "2026-01-01T00:00:00Z", "detector.name": "prada",
                                  "stage": "symptom", "attack": "extraction", "account.id": "a"}) + "\n")
    code = (
        "from kizashi.cli.main import app\n"
        f"app(['rules', 'eval', '--events', {str(events)!r}], standalone_mode=False)\n"
    )
    loaded = _loaded_after(code)
    assert not {"pandas", "sqlalchemy", "sklearn", "rich", "sigma.backends"} & set(loaded), loaded
