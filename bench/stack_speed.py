"""Training throughput of stacks of the paper's MNIST model (784-500-Nz, M = 100, estimator B, §5 and App. C):
one model alone, Figure 2's five MNIST models (Nz in {3, 5, 10, 20, 200}) as one stack against the same five one
after another, and, on a GPU, stacks of 18 and 54 models.

Every contender runs the suite's own training code past Adagrad's warm-up, with the data on the device, in one of
these modes: "eager" (``Stack.train_steps``), "graphed" (``GraphedSteps``: the block of ``steps_per_call``
iterations that ``SampleAxis`` replays on CUDA), "fused" (the same graph over steps compiled by torch.compile,
``compile: true``, the default on CUDA) and "fused-tf32" (fused, ``matmul_precision: tf32``). "sequential" trains
five stacks of one in turn, ``steps_per_call`` iterations each, as five runs of the normal path would. Rounds
alternate the order of the contenders until ``--seconds`` have passed (one round at least); the table gives
medians over rounds and the ratio of medians. FLOP counts are the matrix products of a step (forward, and
backward for weights and inputs); the share of the device's peak uses ``--peak-tflops`` (default: the H200's
fp32 peak, 67 TFLOP/s, on CUDA).

Arrangements of Figure 2's five latent sizes on one GPU (``--arrangements``, CUDA only), each against the one
stack padded to Nz = 200: the five as stacks of one replayed concurrently on five CUDA streams; grouped by size,
Nz in {3, 5, 10, 20} as one stack padded to 20 and Nz = 200 alone, in turn and on two streams; and the three
seeds of the panel as one stack of 15. A contender that cannot be set up is reported and left out. Graphs
captured on the shared capture stream share its cuBLAS workspace, so concurrent replays time an arrangement but
would not train correctly: for training, each graph would be captured on its own stream.

    .venv/bin/python bench/stack_speed.py [--device cuda] [--seconds 20] [--sizes 1 5 18 54]
        [--modes graphed fused fused-tf32] [--sequential-modes graphed fused] [--arrangements] [--out FILE.csv]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable

import torch

from vae.algorithms import AEVB, Stack
from vae.algorithms.graphs import GraphedSteps
from vae.config import Config, make_config
from vae.data import load_dataset

FIGURE2_NZ = (3, 5, 10, 20, 200)
H200_FP32_TFLOPS = 67.0


MODES = ("eager", "graphed", "fused", "fused-tf32")


def configs(nzs: list[int], steps_per_call: int, mode: str = "eager") -> list[Config]:
    """Figure 2's MNIST AEVB settings, the step size fixed, no warm-up (every timed step updates), executed as
    ``mode`` says."""
    execution = dict(compile=mode.startswith("fused"), matmul_precision="tf32" if mode == "fused-tf32" else "highest")
    return [
        make_config(
            dict(
                nz=nz, hidden=500, M=100, lr=0.02, adagrad_warmup=0, seed=i, steps_per_call=steps_per_call, **execution
            )
        )
        for i, nz in enumerate(nzs)
    ]


def flops_per_step(cfg: Config, nz: int) -> float:
    """Multiply-adds x 2 of one training step's matrix products: encoder 784-500 and two 500-Nz heads, decoder
    Nz-500 and 500-784; backward doubles each but the first layer's input gradient."""
    layers = [(784, cfg.hidden), (cfg.hidden, nz), (cfg.hidden, nz), (nz, cfg.hidden), (cfg.hidden, 784)]
    forward = sum(2 * cfg.M * a * b for a, b in layers)
    return 3 * forward - 2 * cfg.M * 784 * cfg.hidden


def stack_of(cfgs: list[Config], train_x: torch.Tensor) -> Stack:
    stack = AEVB(cfgs).to(train_x.device)
    stack.attach(train_x, train_x[:1])
    return stack


def build(cfgs: list[list[Config]], train_x: torch.Tensor, steps: int, mode: str) -> list[Stack] | list[GraphedSteps]:
    """A stack of each group of ``cfgs``; unless eager, each captured as a block of ``steps`` iterations (compiled
    first if fused) before the next is built: a graph keeps the matrix precision it was captured in."""
    if mode == "eager":
        return [stack_of(c, train_x) for c in cfgs]
    return [GraphedSteps(stack_of(c, train_x), steps) for c in cfgs]


def in_turn(parts: list[Stack] | list[GraphedSteps], steps: int) -> Callable[[], None]:
    """One block: ``steps`` iterations of every stack, one stack after another."""

    def block() -> None:
        for part in parts:
            if isinstance(part, GraphedSteps):
                part.run()
            else:
                part.train_steps(steps)

    return block


def on_streams(graphs: list[Stack] | list[GraphedSteps], device: torch.device) -> Callable[[], None]:
    """One block: every graph replayed on its own CUDA stream, concurrently, joined on the current stream."""
    replays = [g for g in graphs if isinstance(g, GraphedSteps)]
    if len(replays) < len(graphs):
        raise ValueError("streams replay graphs: eager stacks run in turn")
    streams = [torch.cuda.Stream(device) for _ in replays]

    def block() -> None:
        current = torch.cuda.current_stream(device)
        for graph, stream in zip(replays, streams, strict=True):
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                graph.run()
        for stream in streams:
            current.wait_stream(stream)

    return block


def timed(block: Callable[[], None], blocks: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(blocks):
        block()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed budget, all contenders together")
    parser.add_argument("--chunk", type=float, default=0.5, help="seconds per timing, roughly")
    parser.add_argument("--sizes", type=int, nargs="*", help="stacks of k Nz=20 models (default: 18 54 on CUDA)")
    parser.add_argument(
        "--modes", nargs="*", choices=MODES, help="execution modes (default: graphed fused on CUDA, eager on the CPU)"
    )
    parser.add_argument(
        "--sequential-modes",
        nargs="*",
        choices=MODES,
        help="modes that also time Figure 2's five models one after another (default: all)",
    )
    parser.add_argument(
        "--arrangements",
        action="store_true",
        help="also Figure 2's five models on streams, grouped by size, and three seeds in one stack (CUDA)",
    )
    parser.add_argument("--steps-per-call", type=int, default=50)
    parser.add_argument("--peak-tflops", type=float, help="the device's fp32 peak (default: H200's on CUDA)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $VAE_DATA_DIR or ./data)")
    parser.add_argument("--out", help="write the table as CSV here")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps_per_call
    modes = args.modes or (["graphed", "fused"] if cuda else ["eager"])
    if not cuda and (set(modes) != {"eager"} or args.arrangements):
        parser.error("graphed and fused modes and the arrangements need a CUDA device")
    train_x = load_dataset(configs([20], steps)[0], args.data_dir)[0].to(device)
    sizes = args.sizes if args.sizes is not None else ([18, 54] if cuda else [])
    peak = args.peak_tflops or (H200_FP32_TFLOPS if cuda else None)

    contenders: dict[str, tuple[Callable[[], None], int, float]] = {}  # name: (block, models, FLOPs per block)
    compile_seconds: dict[str, float] = {}
    for mode in modes:
        fig2, one = configs(list(FIGURE2_NZ), steps, mode), configs([20], steps, mode)
        unpadded = steps * sum(flops_per_step(c, c.nz) for c in fig2)
        # name: (groups of configs, models, FLOPs per block, concurrent on streams); layouts given the same groups
        # (one list) replay the same stacks and graphs, in turn or concurrently
        alone, by_size = [[c] for c in fig2], [fig2[:4], fig2[4:]]
        layouts = {
            f"k=1 {mode}": ([one], 1, steps * flops_per_step(one[0], 20), False),
            f"fig2 stack of 5 {mode}": ([fig2], 5, steps * 5 * flops_per_step(fig2[0], 200), False),
        }
        if args.sequential_modes is None or mode in args.sequential_modes:
            layouts[f"fig2 5 one after another {mode}"] = (alone, 5, unpadded, False)
        if args.arrangements:
            layouts[f"fig2 5 on streams {mode}"] = (alone, 5, unpadded, True)
            grouped = steps * (4 * flops_per_step(fig2[0], 20) + flops_per_step(fig2[4], 200))
            layouts[f"fig2 grouped by size {mode}"] = (by_size, 5, grouped, False)
            layouts[f"fig2 grouped by size on streams {mode}"] = (by_size, 5, grouped, True)
            seeds = configs(list(FIGURE2_NZ) * 3, steps, mode)
            padded = steps * 15 * flops_per_step(seeds[0], 200)
            layouts[f"fig2 3 seeds stack of 15 {mode}"] = ([seeds], 15, padded, False)
        for k in sizes:
            same = configs([20] * k, steps, mode)
            layouts[f"stack of {k} {mode}"] = ([same], k, steps * k * flops_per_step(same[0], 20), False)
        built: dict[int, list[Stack] | list[GraphedSteps]] = {}  # by id of the groups
        for name, (groups, models, flops, concurrent) in layouts.items():
            began = time.perf_counter()
            try:
                parts = built.get(id(groups)) or build(groups, train_x, steps, mode)
                built[id(groups)] = parts
                block = on_streams(parts, device) if concurrent else in_turn(parts, steps)
                timed(block, 2, device)  # warm-up: allocator, kernels, thread pools
            except Exception as e:  # a benchmark reports a contender it cannot run and goes on with the others
                print(f"could not set up {name}: {type(e).__name__}: {e}", flush=True)
                continue
            compile_seconds[name] = time.perf_counter() - began
            contenders[name] = (block, models, flops)
            print(f"set up {name} in {compile_seconds[name]:.1f} s", flush=True)
    blocks = {name: max(1, round(args.chunk / (timed(c[0], 1, device) or 1e-9))) for name, c in contenders.items()}
    where = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"device {where}; torch {torch.__version__}; M=100, hidden 500, {steps} steps per block")
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    start = time.perf_counter()
    names = list(contenders)
    r = 0
    while r < 1 or time.perf_counter() - start < args.seconds:
        for name in names if r % 2 == 0 else names[::-1]:
            block, models, _ = contenders[name]
            seconds = timed(block, blocks[name], device)
            rates[name].append(blocks[name] * steps * 100 * models / seconds)
        r += 1
    rows = []
    for name, (_, models, flops) in contenders.items():
        total = statistics.median(rates[name])
        row = dict(
            contender=name,
            models=models,
            samples_per_s=round(total),
            per_model=round(total / models),
            rounds=len(rates[name]),
            setup_s=round(compile_seconds[name], 1),
        )
        if peak:
            achieved = flops / (steps * 100 * models) * total
            row["share_of_fp32_peak"] = round(achieved / (peak * 1e12), 4)
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()))
    if args.out and rows:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for name in [n for n in rates if n.startswith("fig2 ") and "stack of 5" not in n]:
        mode = name.rsplit(" ", 1)[1]
        if f"fig2 stack of 5 {mode}" in rates:
            ratio = statistics.median(rates[f"fig2 stack of 5 {mode}"]) / statistics.median(rates[name])
            print(f"fig2 stack of 5 {mode} / {name}: {ratio:.2f}")


if __name__ == "__main__":
    main()
