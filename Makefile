# Vigil — the two set-up commands are `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export VIGIL_DATA ?= $(abspath ../shared/data)

.PHONY: demo test eval bench lint soak sysdeps install clean help

help:
	@echo "make demo   - set up and run the demo (broker + daemon on replayed ECG + dashboard)"
	@echo "make test   - set up and run the test suite"
	@echo "make eval   - accuracy tables on the PhysioNet records in VIGIL_DATA ($(VIGIL_DATA))"
	@echo "make bench  - speed and memory tables"
	@echo "make lint   - ruff + mypy"
	@echo "make install - install the appliance (root; DESTDIR=/tmp/root stages it without touching the system)"
	@echo "make soak   - simulated night with injected faults (SOAK_ARGS='--hours 12 --speed 10')"

$(STAMP): pyproject.toml
	@scripts/ensure-system-packages.sh python
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

sysdeps:
	@scripts/ensure-system-packages.sh

demo: $(STAMP) sysdeps
	$(BIN)/vigil demo

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

eval: $(STAMP)
	$(BIN)/python -m vigil.evaluation $(EVAL_ARGS)

bench: $(STAMP) sysdeps
	$(BIN)/python -m vigil.benchmarks $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check vigil tests
	$(BIN)/mypy vigil

install:
	scripts/install.sh $(if $(DESTDIR),--destdir $(DESTDIR)) $(INSTALL_ARGS)

soak: $(STAMP) sysdeps
	$(BIN)/python -m vigil.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
