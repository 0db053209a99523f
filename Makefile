PY := .venv/bin/python
.DEFAULT_GOAL := help

.PHONY: help setup demo test unit lint bench stack clean

help:
	@echo "make demo   - start the local Azure stand-in and run the main job against it"
	@echo "make test   - set up everything and run the whole test suite"
	@echo "make bench  - benchmarks (figures, not pass/fail)"

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m devstack.demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) -m bench

stack: setup
	$(PY) -m devstack up

clean:
	rm -rf .venv node_modules .pytest_cache
