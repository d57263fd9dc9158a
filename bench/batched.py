"""Training throughput of Figure 2's five MNIST AEVB models (784-500-Nz, Nz in {3, 5, 10, 20, 200}, M = 100,
§5 and App. C) trained as one stack (``vae.batched.StackedAEVB``, latent dimension padded to 200) versus one
after another with the normal per-model step loop (``AEVB.train_steps``, no Trainer: the normal path's cost
without Lightning's per-call overhead, so the comparison favours it).

Rounds of one timing of each (about ``--chunk`` seconds) repeat for ``--seconds``, alternating which goes
first, so that machine noise hits both; the ratio is the median over rounds of the per-round ratio. Adagrad
warmup is 0 so every timed step does the full update. Samples/s count the training samples of all five models.

What to expect: on a CPU the stack does not pay off (the same arithmetic plus ~27% for the padded latent layers,
and stacked tensors that fall out of cache); on a GPU, where one step of one model is far below the launch
and Python overhead per step, the stack should run the five models for about the overhead of one (not yet
measured on a GPU).

    .venv/bin/python bench/batched.py [--device cuda] [--seconds 30] [--chunk 1] [--synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from vae.algorithms.aevb import AEVB
from vae.batched import StackedAEVB
from vae.config import Config, make_config
from vae.data import load_dataset

NZ = (3, 5, 10, 20, 200)


def figure2_configs() -> list[Config]:
    return [make_config(dict(nz=nz, hidden=500, M=100, lr=0.02, adagrad_warmup=0, seed=i))
            for i, nz in enumerate(NZ)]


def normal_model(cfg: Config, train_x: torch.Tensor) -> AEVB:
    """``AEVB`` set up as ``on_fit_start``/``on_train_start`` would, for calling ``train_steps`` directly."""
    model = AEVB(cfg).to(train_x.device)
    model.train_x = train_x
    model.generator = torch.Generator(train_x.device).manual_seed(cfg.seed + 1)
    opt = model.adagrad(model)
    model.adagrads = lambda: [opt]
    return model


def timed(train: Callable[[int], None], steps: int, device: torch.device) -> float:
    """Seconds that ``train(steps)`` takes, the device's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed budget, both variants together")
    parser.add_argument("--chunk", type=float, default=1.0, help="seconds per timing, roughly")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $VAE_DATA_DIR or ./data)")
    parser.add_argument("--synthetic", action="store_true",
                        help="uniform random grey levels instead of MNIST (throughput does not depend on them)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfgs = figure2_configs()
    if args.synthetic:
        train_x = torch.rand(cfgs[0].n_train, 784, generator=torch.Generator().manual_seed(0))
    else:
        train_x = load_dataset(cfgs[0], args.data_dir)[0]
    train_x = train_x.to(device)
    stack = StackedAEVB(cfgs, train_x)
    models = [normal_model(cfg, train_x) for cfg in cfgs]

    def batched(steps: int) -> None:
        stack.train_steps(steps)

    def sequential(steps: int) -> None:
        for model in models:
            model.train_steps(steps)

    variants: dict[str, Callable[[int], None]] = {"batched": batched, "sequential": sequential}
    for train in variants.values():  # warm-up: allocator, kernels, thread pools
        timed(train, 2, device)
    per_step = max(min(timed(train, 2, device) for _ in range(2)) / 2 for train in variants.values())
    steps = max(1, round(args.chunk / per_step))
    samples = len(cfgs) * cfgs[0].M * steps
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{device.type}, {torch.get_num_threads()} threads")
    print(f"device {where}; k={len(cfgs)} models 784-500-Nz, Nz={list(NZ)}, M={cfgs[0].M}; "
          f"{steps} steps per model per timing")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    start = time.perf_counter()
    while len(rates["batched"]) < 2 or time.perf_counter() - start < args.seconds:
        r = len(rates["batched"])
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            rates[name].append(samples / timed(variants[name], steps, device))
        print(f"round {r:2d}: batched {rates['batched'][-1]:8.0f} samples/s   sequential "
              f"{rates['sequential'][-1]:8.0f} samples/s   ratio {rates['batched'][-1] / rates['sequential'][-1]:.2f}")
    ratio = statistics.median(b / s for b, s in zip(rates["batched"], rates["sequential"], strict=True))
    print(f"median: batched {statistics.median(rates['batched']):.0f} samples/s, sequential "
          f"{statistics.median(rates['sequential']):.0f} samples/s (total over the {len(cfgs)} models); "
          f"batched / sequential = {ratio:.2f}")

if __name__ == "__main__":
    main()
