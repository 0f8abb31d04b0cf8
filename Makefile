# The two commands of the README. Both set everything up first (idempotent, fast when done).
.PHONY: demo test setup lint stack-down

demo: setup
	.venv/bin/smartport demo

test: setup
	.venv/bin/python -m pytest

setup:
	./deploy/setup.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy .

stack-down:
	.venv/bin/smartport stack down
