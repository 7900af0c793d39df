# `make sweep` and `make test` work on a fresh machine: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: sweep test test-fast test-system test-slow test-cluster mutants bench-sweep bench-blocks bench-profile bench-cli bench-probes bench-resnet bench-conv-policy bench-conv-layers bench-sequential bench-keras bench-numerics clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

sweep: $(VENV)/.installed
	$(BIN)/bnbench sweep experiments/quickstart.toml

# Every test is in one lane (pyproject.toml's markers): unit (pure functions), integration (trains or
# sweeps in the test's process), system (other processes: subprocess sweeps killed or locked, a compilation
# cache across processes, Chromium). `make test` runs unit and integration on two workers (pytest-xdist;
# worksteal: a worker that runs out takes tests queued for the other, so neither idles at the end),
# `make test-system` the system lane, a file per worker (its module fixtures, such as a reference sweep,
# built once); CI runs both, then test-cluster.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "unit or integration"

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m unit

test-system: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m system

# The published numbers made again from scratch (the quickstart, about a minute) and compared with the docs,
# and the robustness command's variant sweeps end to end.
test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m slow

mutants: $(VENV)/.installed-test
	$(BIN)/python tests/mutants.py

# docs/cluster.md's SLURM recipe on a one-node SLURM it starts here (apt-installs slurm-wlm and munge as root).
test-cluster: $(VENV)/.installed
	$(BIN)/python tests/cluster/slurm_recipe.py

bench-sweep: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_sweep.py

bench-blocks: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_blocks.py

bench-cli: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cli.py

bench-probes: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_probes.py

bench-resnet: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_resnet.py

bench-conv-policy: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_conv_policy.py

bench-conv-layers: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_conv_layers.py

bench-sequential: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.bench_sequential

# A Keras tutorial CNN: bnbench's placement sweep vs model.fit. Needs MNIST's IDX .gz files in
# ../shared/data/mnist (another folder: python benchmarks/bench_keras.py --data-dir DIR); says so and stops without them.
bench-keras: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_keras.py

# Portable against native numerics (docs/reproducibility.md): whole sweep processes, the main job and conv nets.
bench-numerics: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_numerics.py

bench-profile: $(VENV)/.installed
	$(BIN)/bnbench profile --shape 128,56,56,64 --dtype float32 --mode train,grad,infer --out results/bench-profile.csv

clean:
	rm -rf $(VENV) results/*/
