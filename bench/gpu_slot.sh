#!/usr/bin/env bash
# One lent GPU slot, start to finish, inside SLOT_SECONDS. PHASES (default "tests throughput reference") picks
# which of these run, each with its own time limit; a failed phase does not stop the next:
#   tests       the GPU tier, each failure's report printed as it happens (a phase cut short keeps them)
#   throughput  bench/stack_speed.py: k = 1, Figure 2's stack against one after another, a stack of 54, and the
#               arrangements of Figure 2's five models (streams, grouped by size, three seeds in one stack)
#   tf32        Figure 2's MNIST AEVB sweep to 1e7 in TF32 (results/gpu/tf32 holds the one measured)
#   reference   a unit of the reference (UNIT) for the time that is left, checkpointed at the deadline
# The tests run beside the unit (neither fills the GPU); the throughput runs alone, last.
# Everything it measured goes to $OUT: results.tar (logs, throughput CSV, TF32 runs) and the unit's runs*.tar,
# which `python -m vae.runs.units adopt` puts into reference/runs.
#
# The data travel in a git-ignored folder named in the call's carry: copy ../shared/data/mnist (and frey, for the
# Frey Face unit) into .gpu-data/ and add /.gpu-data/ to .git/info/exclude.
#
#   SLOT_SECONDS=560 UNIT=mnist-aevb DATA=.gpu-data bash bench/gpu_slot.sh
set -uo pipefail
cd "$(dirname "$0")/.."
began=$(date +%s)
SLOT_SECONDS=${SLOT_SECONDS:-560}
UNIT=${UNIT:-mnist-aevb}
PHASES=${PHASES:-tests throughput reference}
SETTINGS=${SETTINGS:-accelerator=gpu steps_per_call=500 checkpoint_minutes=2}  # the unit's execution keys
OUT=${OUT:-results/gpu/slot}
export VAE_DATA_DIR=${DATA:-.gpu-data} PYTHONPATH=. PYTHONUNBUFFERED=1
mkdir -p results/gpu "$OUT"
left() { echo $(( SLOT_SECONDS - ($(date +%s) - began) )); }
phase() {  # phase NAME SECONDS COMMAND...: run COMMAND for at most SECONDS, log to results/gpu/NAME.log
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit} s, $(left) s left in the slot)"
    timeout -k 20 "$limit" "$@" > "results/gpu/$name.log" 2>&1
    echo "== $name: exit $? after $(( $(date +%s) - began )) s"; tail -n 25 "results/gpu/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv > results/gpu/device.txt 2>&1
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" \
    >> results/gpu/device.txt 2>&1
cat results/gpu/device.txt
wants() { [[ " $PHASES " == *" $1 "* ]]; }

if wants tests; then
    VAE_REPORT_AT_ONCE=1 phase tests 300 python3 -m pytest -p no:cacheprovider -v -rf --tb=short --timeout 90 \
        -m gpu tests/test_gpu.py &
    tests=$!
fi
if wants tf32; then
    phase tf32 80 python3 -m vae train experiments/fig2_mnist_aevb.yaml --engine stack --results-dir results/gpu/tf32 \
        --set budget=1e7 matmul_precision=tf32 wandb=disabled $SETTINGS
fi
if wants reference; then
    python3 -m vae.runs.units stage "$UNIT" --staging results/units
    # what the deadline leaves: the SIGTERM grace, the packing and, after it, the throughput phase
    budget=$(( $(left) - 90 - $(wants throughput && echo 170 || echo 0) ))
    phase reference $(( budget + 60 )) python3 -m vae.runs.units train "$UNIT" --staging results/units \
        --seconds "$budget" --set $SETTINGS
    python3 -m vae.runs.units pack "$UNIT" --staging results/units --out "$OUT"
    python3 -m vae tables --results-dir results/units --include-incomplete > results/gpu/reference-tables.log 2>&1
fi
[[ -n ${tests:-} ]] && wait "$tests"
if wants throughput; then
    phase throughput 150 python3 bench/stack_speed.py --seconds 20 --modes fused --sizes 54 --arrangements \
        --out results/gpu/throughput.csv
fi
tar -cf "$OUT/results.tar" --exclude='*.ckpt' results/gpu results/units/tables 2>/dev/null
ls -la "$OUT"; echo "slot used $(( $(date +%s) - began )) s"
