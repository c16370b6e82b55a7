#!/usr/bin/env bash
# Create (when missing) the separate virtual environment that runs a real Seldon MLServer for the sensor tests and
# bench (MLServer needs Python < 3.13 and pins its own dependencies, so it does not share kizashi's
# venv). Idempotent: does nothing when the venv already has mlserver. scikit-learn is pinned to the
# version of kizashi's own interpreter, so the joblib model files the tests write load unchanged.
#   usage: scripts/mlserver-venv.sh [KIZASHI_PYTHON] [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
KPY=${1:-.venv/bin/python}
VENV=${2:-${KIZASHI_MLSERVER_VENV:-.venv-mlserver}}
MLSERVER_VERSION=1.7.1
if [ -x "$VENV/bin/mlserver" ] && "$VENV/bin/python" -c "import mlserver_sklearn" 2>/dev/null; then
  exit 0
fi
SKLEARN=$("$KPY" -c "import sklearn; print(sklearn.__version__)")
BASE=""
for cand in python3.12 python3.11 python3.10 "$KPY"; do
  if command -v "$cand" >/dev/null 2>&1 || [ -x "$cand" ]; then
    if "$cand" -c "import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] < (3, 13) else 1)" 2>/dev/null; then
      BASE=$cand; break
    fi
  fi
done
if [ -z "$BASE" ]; then echo "mlserver-venv: no Python 3.9-3.12 interpreter found" >&2; exit 1; fi
# the base interpreter itself, not a venv's symlink (venv-in-venv would inherit nothing anyway)
BASE=$("$BASE" -c "import sys; print(getattr(sys, '_base_executable', sys.executable))")
"$BASE" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "mlserver==$MLSERVER_VERSION" "mlserver-sklearn==$MLSERVER_VERSION" "scikit-learn==$SKLEARN"
"$VENV/bin/python" -c "import mlserver, mlserver_sklearn; print('mlserver', mlserver.__version__)"
