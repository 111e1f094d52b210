.PHONY: check lint test bench

# What CI runs (.ci/run): lint, type-check, the whole test suite.
check:
	bash .ci/run

lint:
	ruff check tidegate tests bench
	mypy

test:
	python3 -m pytest -q

bench:
	python3 bench/revenue.py
