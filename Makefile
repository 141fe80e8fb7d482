# One command each on a fresh machine: `make train`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test tiers: `make test` (what CI runs, within its 15-minute budget) skips tests marked slow;
# `make test-full` runs everything. Both in a random order; SEED=N repeats an order.
ifndef SEED
SEED := $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
endif
PYTEST := $(PY) -m pytest -q --randomly-seed=$(SEED) --durations=15
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)

.PHONY: setup data train test test-full lint format bench toy-bench sweep clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first, at the versions these machines serve from local disk.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data:
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
		echo "installing Debian package dataset-fashion-mnist"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi
	@[ -f $(FASHION_MNIST) ] || echo "warning: Fashion-MNIST not found at $(FASHION_MNIST); set data.root= or data.download=true"

# The default study: DCGAN on Fashion-MNIST; `make train EXPERIMENT=ring_mlp ARGS='loss=hinge'`.
EXPERIMENT ?= fashion_dcgan

train: setup
	$(PY) -m gan_lab.train experiment=$(EXPERIMENT) $(ARGS)

test: setup
	@echo "make test: tests not marked slow, random order SEED=$(SEED)"
	$(PYTEST) -m "not slow" $(ARGS)

test-full: setup
	@echo "make test-full: every test, slow included, random order SEED=$(SEED)"
	$(PYTEST) $(ARGS)

lint: setup
	$(VENV)/bin/ruff check gan_lab hydra_plugins tests benchmarks
	$(VENV)/bin/ruff format --check gan_lab hydra_plugins tests benchmarks

format: setup
	$(VENV)/bin/ruff format gan_lab hydra_plugins tests benchmarks
	$(VENV)/bin/ruff check --fix gan_lab hydra_plugins tests benchmarks

bench: setup
	$(PY) -m benchmarks.bench --out benchmarks/results/$(if $(DEVICE),$(DEVICE),cpu).json $(if $(DEVICE),--device $(DEVICE),)

# PacGAN's ring/grid benchmark: shipped best configs and the plain GAN, 5 seeds each,
# beside the published rows -> docs/toy_benchmark.md (ARGS=--jobs 2: two runs at a time).
toy-bench: setup
	$(PY) -m benchmarks.toy_bench $(ARGS)

# A small CPU study: 3 losses x 3 seeds on the ring, 2 jobs in parallel (joblib), then the report.
SWEEP_DIR ?= multirun/sweep_$(shell date +%Y-%m-%d_%H-%M-%S)
sweep: setup
	$(PY) -m gan_lab.train -m hydra/launcher=local_parallel experiment=ring_mlp \
		loss=minimax,non_saturating,hinge seed=0,1,2 train.iterations=1500 \
		eval.every_n_iterations=500 trainer.enable_progress_bar=false hydra.sweep.dir=$(SWEEP_DIR)
	$(PY) -m gan_lab.report $(SWEEP_DIR)

clean:
	rm -rf outputs multirun wandb .pytest_cache
