# mmmila: the two commands of the README, plus their relatives.
#   make demo       set up, then train / evaluate / run inference on the embedded toy COCO set
#   make test       set up, then run the default test suite (fast; every part of the project)
#   make test-slow  the slow end-to-end tests (training runs, DDP, demo pipeline)
#   make test-seeds the default suite, then every test of it that drew random numbers under
#                   SEEDS-1 more seeds (MMMILA_TEST_SEED=1..SEEDS-1; docs/testing.md)
# MMMILA_INSTALL_ENV=current uses the active Python environment instead of ./.venv.
SHELL := /bin/bash
ifeq ($(MMMILA_INSTALL_ENV),current)
PY ?= python3
else
PY ?= $(CURDIR)/.venv/bin/python
endif
PYTEST_ARGS ?=
SEEDS ?= 20

.PHONY: install demo test test-slow test-all test-seeds
install:
	bash tools/install.sh

demo: install
	PATH="$(dir $(PY)):$$PATH" bash tools/demo.sh

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-seeds: install
	@list="$$(mktemp)"; trap 'rm -f "$$list"' EXIT; \
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS) --list-random-tests="$$list" || exit 1; \
	echo "make test-seeds: $$(wc -l < "$$list") tests drew random numbers; running them under seeds 1..$$(($(SEEDS) - 1))"; \
	for seed in $$(seq 1 $$(($(SEEDS) - 1))); do \
	  echo "== MMMILA_TEST_SEED=$$seed"; \
	  MMMILA_TEST_SEED=$$seed $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) @"$$list" || exit 1; \
	done
