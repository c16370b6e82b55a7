"""The CLI works from a built wheel, not only from the source tree."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile

from conftest import ROOT


def test_wheel_contains_namespace_and_data_and_cli_runs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("kizashi-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "kizashi/mappings/methods.yaml" in names and "kizashi/mappings/atlas.json" in names
    assert "kizashi/rules/alerting.toml" in names  # the bundled alerting defaults (rules/alerting.toml)
    assert "kizashi/cli/main.py" in names and "kizashi/engine/events.py" in names
    assert "kizashi/scenarios/demo_day.py" in names and "kizashi/scenarios/receivers.py" in names
    assert "kizashi/sensor/app.py" in names and "kizashi/detectors/artefacts.py" in names
    assert not any(n.startswith(("engine/", "detectors/", "cli/")) for n in names), "generic top-level names"
    assert any(n.startswith("kizashi-") and n.endswith("entry_points.txt") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # -S: no site processing, so the editable install's finder is not active; only the wheel is.
    deps = sysconfig.get_paths()["purelib"]
    code = (
        f"import sys; sys.path[:0] = [{str(site)!r}, {deps!r}]\n"
        "import kizashi.cli.main as m, kizashi.mappings as mp\n"
        f"assert m.__file__.startswith({str(site)!r}), m.__file__\n"
        "sys.argv = ['kizashi', 'catalog', '--have', 'input', '--format', 'json']\n"
        "m.main()\n"
    )
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "juuti2019-prada" in r.stdout
