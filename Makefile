# lift3d — every target creates .venv when missing and installs torch==2.13.0 first
# (a local CPU wheel here; users with GPUs bring their own torch build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
DEMO_OUT ?= demo_out
# auto: the demo's translation and generation halves at once with 2+ cores; 1: in turn
DEMO_JOBS ?= auto

.PHONY: venv install install-dev demo test test-slow bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	touch $@

venv install install-dev: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m lift3d.demo --out $(DEMO_OUT) --fresh --jobs $(DEMO_JOBS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

bench: $(VENV)/.installed
	$(VENV)/bin/lift3d bench --size quick --json BENCH_quick.json --overwrite

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
