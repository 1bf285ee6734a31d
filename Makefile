# MedGround entry points. Every target sets itself up: `make build` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/demo.toml
OUT    ?= out/demo

.PHONY: setup setup-ray build candidates test bench clean push preview eval

setup: $(STAMP)

$(STAMP): requirements.lock requirements-test.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-test.lock
	touch $(STAMP)

# The optional Ray executor (`--executor ray`); `setup` leaves it out.
setup-ray: $(VENV)/.installed-ray

$(VENV)/.installed-ray: $(STAMP) requirements-ray.lock
	$(PY) -m pip install --quiet -r requirements-ray.lock
	touch $@

build: $(STAMP)
	$(PY) -m builder build --config $(CONFIG) --out $(OUT)

candidates: $(STAMP)
	$(PY) -m builder candidates --config $(CONFIG) --out $(OUT)/candidates

REPO ?= medground/medground-35k
DATA ?= out/demo

push: $(STAMP)
	$(PY) -m builder push --data $(DATA) --repo $(REPO)

preview: $(STAMP)
	$(PY) -m builder preview --data $(DATA) --out $(if $(filter command line,$(origin OUT)),$(OUT),$(DATA)/preview)

eval: $(STAMP)
	$(PY) -m builder eval --data $(DATA) --config $(or $(EVAL_CONFIG),default) --split test --base-url $(BASE_URL) --model $(MODEL) --format $(or $(FORMAT),json) --out $(or $(EVAL_OUT),$(DATA)/eval)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf out .pytest_cache
