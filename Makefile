# `make run` and `make test` each set everything up on a fresh machine first (scripts/setup.sh).
.PHONY: setup run test test-all bench clean

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/python experiments/train.py $(ARGS)

test: setup
	.venv/bin/python -m pytest -q $(ARGS)

# Speed: our learner vs a plain PyTorch loop vs Avalanche, rendering, eval share, memory (2-4 min on 2 CPU cores).
bench: setup
	.venv/bin/python experiments/bench.py $(ARGS)

clean:
	rm -rf runs outputs multirun wandb .cache
