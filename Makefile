# `make run` and `make test` each set everything up on a fresh machine first (scripts/setup.sh).
.PHONY: setup run test test-all bench sweep one-look paper-results paper clean

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/python experiments/train.py $(ARGS)

test: setup
	.venv/bin/python -m pytest -q $(ARGS)

# Speed: our learner vs a plain PyTorch loop vs Avalanche, per experience and online (per sample), rendering,
# eval share, memory (about 5 min on 2 CPU cores).
bench: setup
	.venv/bin/python experiments/bench.py $(ARGS)

RESULTS ?= runs/paper

# The ablation of the closing table: memory size x attribute heads x 3 seeds, jobs in parallel.
sweep: setup
	.venv/bin/python experiments/train.py -m experiment=ablation hydra.sweep.dir=$(RESULTS)/ablation $(ARGS)
	.venv/bin/python experiments/report.py $(RESULTS)/ablation --wandb

# The one-look ablation: each mechanism off in turn, on the world, the long tail and Omniglot with
# alphabets held out (78 runs, about 30 minutes on 2 CPU cores), then a table per sweep.
one-look: setup
	for e in one_look one_look_long_tail one_look_omniglot; do \
	  .venv/bin/python experiments/train.py -m experiment=$$e hydra.sweep.dir=$(RESULTS)/$$e $(ARGS) || exit 1; \
	  .venv/bin/python experiments/report.py $(RESULTS)/$$e --metrics A_T speed_k0 speed_k1 speed_k5 \
	    speed_k10 tail_head lake_error meet_10 meet_all || exit 1; done

# Every sweep the paper reads, into $(RESULTS) (the first five about an hour on 2 CPU cores, the diversity
# sweep's 25 runs about another hour and a half; the three
# one_look sweeps add 78 runs, the two online sweeps 30, the noisy-tags sweep 72 (about two hours); finished
# runs are kept, so an interrupted call picks up where it stopped). The Omniglot sweeps need ../shared/data/omniglot.
paper-results: setup
	for e in ablation init_ablation baselines scaling scaling_diversity gzsl; do \
	  .venv/bin/python experiments/train.py -m experiment=$$e hydra.sweep.dir=$(RESULTS)/$$e || exit 1; done
	.venv/bin/python experiments/train.py -m experiment=omniglot seed=0,1,2 progress=false threads=1 \
	  hydra/launcher=parallel hydra.sweep.dir=$(RESULTS)/omniglot
	for e in one_look one_look_long_tail one_look_omniglot online online_omniglot tags; do \
	  .venv/bin/python experiments/train.py -m experiment=$$e hydra.sweep.dir=$(RESULTS)/$$e || exit 1; done

# Tables, figures and numbers of paper/main.tex from $(RESULTS), then the PDF when TeX is installed.
paper: setup
	$(MAKE) -C paper RESULTS=$(abspath $(RESULTS)) PYTHON=$(abspath .venv/bin/python)

clean:
	rm -rf runs outputs multirun wandb .cache
