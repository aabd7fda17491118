# `make run` and `make test` each set everything up on a fresh machine first (scripts/setup.sh).
.PHONY: setup run test test-all bench clean

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/python experiments/train.py $(ARGS)

test: setup
	.venv/bin/python -m pytest -q $(ARGS)

clean:
	rm -rf runs outputs multirun wandb .cache
