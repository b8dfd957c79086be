# One command per gate; CI runs `make lint` and `make test` through .ci/run.
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.setup-stamp

.PHONY: setup run test lint format bench demo-model clean

$(SETUP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(SETUP)

## Run the service with demo defaults: synthetic source, bundled demo model, local SQLite.
run: $(SETUP)
	$(VENV)/bin/pandapulse serve

## The whole test suite, from nothing (installs what it needs first).
test: $(SETUP)
	bash scripts/test.sh

## ruff, ruff format --check, mypy: the gate .ci/run and the pre-commit hook run too.
lint: $(SETUP)
	VENV=$(VENV) bash scripts/lint.sh

format: $(SETUP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(SETUP)
	$(PY) bench/model_bench.py
	$(PY) bench/precision_bench.py
	$(PY) bench/train_bench.py
	$(PY) bench/latency_bench.py
	$(PY) bench/archive_bench.py
	$(PY) bench/encounter_audio_size.py
	$(PY) bench/gpu_bench.py

## Rebuild the committed demo model and its reports from scratch (about 35 min on 2 cores).
demo-model: $(SETUP)
	bash scripts/demo_model.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
