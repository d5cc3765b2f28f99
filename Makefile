# mmmila: the two commands of the README, plus their relatives.
#   make demo       set up, then train / evaluate / run inference on the embedded toy COCO set
#   make test       set up, then run the default test suite (fast; every part of the project)
#   make test-slow  the slow end-to-end tests (training runs, DDP, demo pipeline)
# MMMILA_INSTALL_ENV=current uses the active Python environment instead of ./.venv.
SHELL := /bin/bash
ifeq ($(MMMILA_INSTALL_ENV),current)
PY ?= python3
else
PY ?= $(CURDIR)/.venv/bin/python
endif
PYTEST_ARGS ?=

.PHONY: install demo test test-slow test-all
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
