# kizashi: `make demo` runs the main job on the embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= kizashi-demo
# PyFlink in its own environment (it pins its own pandas/pyarrow); `kizashi flink run` and
# tests/test_flink.py find it beside $(VENV). Needs Java 17 (scripts/provision.sh installs it).
FLINK_VENV ?= .venv-flink

.PHONY: demo test lint bench install flink-install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $@

$(FLINK_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLINK_VENV)/bin/python -m pip install -q -e ".[flink]"
	@touch $@

install: $(VENV)/.installed

flink-install: $(FLINK_VENV)/.installed

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[demo]"
	@touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/kizashi demo --out $(OUT)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

# The Debian packages the tests run against (PostgreSQL, rsyslog, Chromium): installed when missing,
# a no-op check otherwise. The tests start and stop the servers themselves.
.PHONY: provision
provision:
	./scripts/provision.sh

# Seldon MLServer for the sensor tests and bench, in its own venv (it needs Python < 3.13 and pins its
# own dependencies): created once, a no-op afterwards.
.PHONY: mlserver-venv
mlserver-venv: $(VENV)/.installed
	./scripts/mlserver-venv.sh $(BIN)/python .venv-mlserver

test: provision $(VENV)/.installed $(FLINK_VENV)/.installed mlserver-venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) $(FLINK_VENV) build *.egg-info $(OUT)
