#!/usr/bin/env bash
# One lent GPU slot, start to finish, inside SLOT_SECONDS: the GPU tests, the throughput of every execution mode,
# Figure 2's MNIST AEVB sweep to 1e7 in TF32, then a unit of the reference (UNIT) for the time that is left,
# checkpointed at the deadline. Each phase has its own time limit and a failed phase does not stop the next.
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
phase tests 180 python3 -m pytest -p no:cacheprovider -v -rf --tb=short --timeout 90 -m gpu tests/test_gpu.py
phase throughput 110 python3 bench/stack_speed.py --seconds 15 --modes graphed fused fused-tf32 --sizes 54 \
    --sequential-modes graphed fused --out results/gpu/throughput.csv
phase tf32 80 python3 -m vae train experiments/fig2_mnist_aevb.yaml --engine stack --results-dir results/gpu/tf32 \
    --set budget=1e7 matmul_precision=tf32 wandb=disabled accelerator=gpu steps_per_call=500
python3 -m vae.runs.units stage "$UNIT" --staging results/units
budget=$(( $(left) - 75 ))  # the SIGTERM grace and the packing
phase reference $(( budget + 60 )) python3 -m vae.runs.units train "$UNIT" --staging results/units --seconds "$budget" \
    --set accelerator=gpu steps_per_call=500 checkpoint_minutes=2
python3 -m vae.runs.units pack "$UNIT" --staging results/units --out "$OUT"
python3 -m vae tables --results-dir results/units --include-incomplete > results/gpu/reference-tables.log 2>&1
tar -cf "$OUT/results.tar" --exclude='*.ckpt' results/gpu results/units/tables 2>/dev/null
ls -la "$OUT"; echo "slot used $(( $(date +%s) - began )) s"
