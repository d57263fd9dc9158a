# Entry points of the AEVB reproduction suite (`make help` lists them). The first target run creates .venv and
# installs the package. `make reproduce-mnist SAMPLES=1e6` shortens a budget; run again to continue or extend.
# Settings: DATA (data folder, default $VAE_DATA_DIR or ./data), RESULTS (your runs, default ./results, which
#   git ignores), REFERENCE (the committed reference runs, default ./reference), SAMPLES (budget per curve),
#   RESTART=1 (train again from zero the runs that have results but no checkpoint), SEEDS (seeds per curve,
#   0, 1, ...: tables then give the mean, sd and a 95% t interval, figures a band), DEVICES / NODES (one run over several GPUs with DDP),
#   GPUS (fan the runs of a sweep out over this many local GPUs with Ray, one run per GPU),
#   ADDRESS (fan them out over an existing Ray cluster, e.g. ADDRESS=auto on its head node),
#   STACK=1 (train the runs of a sweep that can share a stack together in one process: for one GPU),
#   TORCH (a torch requirement installed first, e.g. TORCH=torch==2.14.1 for a machine's own build; the package
#   itself takes torch>=2.6).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= $(or $(VAE_DATA_DIR),./data)
RESULTS ?= results
REFERENCE ?= reference
RESTART ?=
SAMPLES ?=
SEEDS ?=
DEVICES ?=
NODES ?=
GPUS ?=
ADDRESS ?=
STACK ?=
TORCH ?=
export VAE_DATA_DIR := $(DATA)

ENGINE := $(if $(STACK),--engine stack,$(if $(or $(GPUS),$(ADDRESS)),--engine ray $(if $(GPUS),--gpus $(GPUS)) $(if $(ADDRESS),--address $(ADDRESS))))
TRAIN := $(PY) -m vae train --results-dir "$(RESULTS)" --data-dir "$(DATA)" --reference "$(REFERENCE)" $(ENGINE) \
	$(if $(RESTART),--restart) \
	$(if $(SEEDS),--seeds $(SEEDS))
BUDGET := $(if $(SAMPLES),budget=$(SAMPLES)) $(if $(DEVICES),devices=$(DEVICES)) $(if $(NODES),num_nodes=$(NODES))

GPU_PY ?= python3

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  make \1\t\2/' | expand -t 24

.PHONY: help gpu-check gpu-reference install test test-full test-gpu-stack lint reproduce-mnist reproduce-frey reproduce-fig2 reproduce-fig45 reproduce-fig3 ablations smoke data log-px tables figures bench

install: $(VENV)/.installed  ## create .venv and install the package with its test dependencies
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH),$(PY) -m pip install --quiet "$(TORCH)")
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

test: install  ## fast test suite (CPU, a few minutes)
	$(PY) -m pytest -q -m "not slow"

test-full: install  ## the test suite with the slow tests
	$(PY) -m pytest -q

# test-gpu-stack: the GPU machine's software (Python 3.12, torch 2.11, Lightning 2.6.6; no wandb, no Ray) in
# .venv-gpu-stack, on the CPU: the tests of what a GPU slot runs that need no GPU (compiled steps against eager
# ones, stacks against runs alone, training without wandb and Ray, the units' commands), so that a difference of
# torch versions shows here and not in a slot. The first run installs torch's CUDA wheels (about 5 GB).
GPU_STACK := .venv-gpu-stack
GPU_STACK_PYTHON ?= python3.12
GPU_STACK_TORCH ?= torch==2.11.0
test-gpu-stack:  ## the tests a GPU slot relies on, on the CPU, under the GPU machine's Python, torch and Lightning
	[ -x $(GPU_STACK)/bin/python ] || { $(GPU_STACK_PYTHON) -m venv $(GPU_STACK) && $(GPU_STACK)/bin/python -m pip \
		install --quiet "$(GPU_STACK_TORCH)" lightning==2.6.6 pandas matplotlib scipy pyyaml tabulate pytest; }
	PYTHONPATH="$(CURDIR)" $(GPU_STACK)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" \
		tests/test_fused_steps.py tests/test_stack_equals_alone.py tests/test_optional_deps.py tests/test_units.py

lint: install  ## ruff check, mypy and ruff format --check over the code (settings in pyproject.toml; CI runs it)
	$(PY) -m ruff check
	$(PY) -m mypy
	$(PY) -m ruff format --check

data: install  ## verify (and download if missing) MNIST and Frey Face; print their facts
	$(PY) -m vae data --data-dir "$(DATA)"

reproduce-mnist: install  ## Figure 2, MNIST, AEVB, Nz in {3,5,10,20,200}, to 1e8 samples
	$(TRAIN) experiments/fig2_mnist_aevb.yaml --set $(BUDGET)

reproduce-frey: install  ## Figure 2, Frey Face, AEVB and wake-sleep, Nz in {2,5,10,20}, to 1e8 samples
	$(TRAIN) experiments/fig2_frey_aevb.yaml --set $(BUDGET)
	$(TRAIN) experiments/fig2_frey_wakesleep.yaml --set $(BUDGET)

reproduce-fig45: install  ## the MNIST Nz=2 model of Figures 4 and 5 (with fig2's runs for the rest)
	$(TRAIN) experiments/fig45_mnist_aevb.yaml --set $(BUDGET)

reproduce-fig2: reproduce-mnist reproduce-frey  ## all nine panels of Figure 2, AEVB and wake-sleep
	$(TRAIN) experiments/fig2_mnist_wakesleep.yaml --set $(BUDGET)

reproduce-fig3: install  ## Figure 3: AEVB, wake-sleep and MCEM, N_train = 1000 and 50000, marginal likelihood
	$(TRAIN) experiments/fig3_n1000.yaml --set $(BUDGET)
	$(TRAIN) experiments/fig3_n1000_mcem.yaml --set $(BUDGET)
	$(TRAIN) experiments/fig3_n50000.yaml --set $(BUDGET)
	$(TRAIN) experiments/fig3_n50000_mcem.yaml --set $(BUDGET)

ablations: install  ## the ablations: Frey Face step size, initialisation and x-axis, Frey wake-sleep plateau, MNIST wake-sleep Nz=200, Figure 3 step size, selection and weight prior
	$(TRAIN) experiments/ablation_frey_lr.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_frey_init.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_frey_minibatch.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_frey_counter.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_frey_as_is.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_frey_ws_logvar.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_frey_ws_lr.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_frey_ws_init.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_mnist_ws200_lr.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_mnist_ws200_binarize.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_mnist_ws200_logvar.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_mnist_ws200_plain_head.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_fig3_n50000_lr.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_fig3_n50000_prior.yaml --set $(BUDGET)
	$(TRAIN) experiments/ablation_fig3_n50000_select.yaml --set $(BUDGET)

smoke: install  ## the whole pipeline on a tiny budget (well under a minute)
	$(PY) -m vae train experiments/smoke.yaml --results-dir "$(RESULTS)/smoke" --data-dir "$(DATA)" $(ENGINE)

bench: install  ## throughput: the suite against plain and Lightning loops; a stack against its runs one after another
	$(PY) bench/train_speed.py
	$(PY) bench/stack_speed.py

# Not through .venv: a GPU machine brings its own torch and Lightning (wandb and Ray are not needed).
# gpu-check: the GPU tests, the throughput of every execution mode and of the arrangements of Figure 2's five
# models (streams, grouped by size, three seeds in one stack), and Figure 2's MNIST AEVB sweep to 1e7 in TF32
# (to compare with the float32 seeds of the reference). gpu-reference: a unit of experiments/reference_units.yaml
# trained to the paper's axis for at most GPU_SECONDS, continued from the reference's checkpoints, packed for
# `python -m vae.runs.units adopt` (GPU_OUT, default $$OUT on the lent machine).
GPU_SECONDS ?= 480
GPU_OUT ?= $(or $(OUT),results/gpu/units)
GPU_SETTINGS ?= accelerator=gpu steps_per_call=500 checkpoint_minutes=2
UNIT ?= mnist-aevb
gpu-check:  ## on a GPU machine (its python3, nothing installed): GPU tests, throughput, TF32 at 1e7 -> results/gpu/
	mkdir -p results/gpu
	VAE_REPORT_AT_ONCE=1 PYTHONPATH=. $(GPU_PY) -m pytest -p no:cacheprovider -q -m gpu tests/test_gpu.py 2>&1 \
		| tee results/gpu/tests.txt
	PYTHONPATH=. $(GPU_PY) bench/stack_speed.py --seconds 20 --modes graphed fused fused-tf32 --sizes 54 \
		--sequential-modes graphed fused --arrangements \
		--out results/gpu/throughput.csv 2>&1 | tee results/gpu/throughput.txt
	PYTHONPATH=. $(GPU_PY) -m vae train experiments/fig2_mnist_aevb.yaml --engine stack --results-dir results/gpu/tf32 \
		--data-dir "$(DATA)" --set budget=1e7 matmul_precision=tf32 wandb=disabled $(GPU_SETTINGS) \
		2>&1 | tee results/gpu/tf32.log

gpu-reference:  ## on a GPU machine: train UNIT (make gpu-reference UNIT=mnist-aevb) for GPU_SECONDS, packed in GPU_OUT
	PYTHONPATH=. $(GPU_PY) -m vae.runs.units stage $(UNIT) --staging results/units --reference "$(REFERENCE)"
	PYTHONPATH=. $(GPU_PY) -m vae.runs.units train $(UNIT) --staging results/units --data-dir "$(DATA)" \
		--seconds $(GPU_SECONDS) --set $(GPU_SETTINGS)
	PYTHONPATH=. $(GPU_PY) -m vae.runs.units pack $(UNIT) --staging results/units --out "$(GPU_OUT)"

log-px: install  ## log p(x) (importance sampling, k=5000, 1000 test images) of your trained Figure 2 runs, for make tables
	@set -- "$(RESULTS)"/runs/fig2-*/*/checkpoints/last.ckpt; \
	[ -f "$$1" ] || { echo "no trained Figure 2 run with a checkpoint under $(RESULTS)/runs: train one first (make reproduce-mnist)"; exit 2; }; \
	for ckpt do set -- "$$@" "$${ckpt%/checkpoints/last.ckpt}"; shift; done; \
	$(PY) -m vae log-px "$$@" --data-dir "$(DATA)"

tables: install  ## results/tables/: your runs (results/ and each folder in it) beside the paper and the reference runs (reference/tables/ if none)
	$(PY) -m vae tables --results-dir "$(RESULTS)" --reference "$(REFERENCE)"

figures: install  ## results/figures/: Figures 2-3 from your runs (results/ and each folder in it) over the paper's and the reference's, 4-5 from checkpoints
	$(PY) -m vae figures --results-dir "$(RESULTS)" --reference "$(REFERENCE)"
