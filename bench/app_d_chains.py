"""Where App. D's estimate of log p(x) fails, and what its open choices change: for one trained run, one HMC run
per step-size tuning (``marginal_step_tuning``: one step size for the batch, or one per chain), and from the same
posterior samples App. D under both KDE bandwidths (``marginal_bandwidth``). Per row: the mean and median
estimate, how many datapoints got log p(x) > 0 (impossible for binary data), how many chains visited at most
Nz distinct positions while q(z) was fitted (stuck: their KDE is singular and their q(z) a fallback), and the
largest excess of a datapoint's estimate over importance sampling with the encoder (k = 1000).

    .venv/bin/python bench/app_d_chains.py RUN_FOLDER [--split test] [--points 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from vae import load_run
from vae.data import load_dataset
from vae.models.marginal import distinct_points, hmc_posterior_samples, log_marginal_from_samples, log_marginal_is


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder with a checkpoint (results/runs/<sweep>/<run>)")
    parser.add_argument("--split", choices=["train", "test"], default="test", help="(default: %(default)s)")
    parser.add_argument("--points", type=int, default=10000, help="the split's first POINTS (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the chains' random stream (default: %(default)s)")
    args = parser.parse_args()
    model, cfg = load_run(args.run)
    train_x, test_x = load_dataset(cfg)
    x = (train_x if args.split == "train" else test_x)[: args.points]
    with torch.no_grad():
        mean, logvar = model.encoder(x)
    importance = log_marginal_is(x, model.decoder, model.encoder, torch.Generator().manual_seed(args.seed), k=1000)
    print(f"{args.run}: {args.split}, first {len(x)} points, seed {args.seed}")
    print(f"importance sampling, k = 1000: mean {float(importance.double().mean()):.2f}")
    print("| step tuning | bandwidth | mean | median | log p(x) > 0 | stuck chains | largest excess over IS | s |")
    print("|---|---|---|---|---|---|---|---|")
    for tuning in ("batch", "chain"):
        began = time.perf_counter()
        g = torch.Generator().manual_seed(args.seed)
        z0 = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        samples = hmc_posterior_samples(
            x,
            model.decoder,
            z0,
            g,
            cfg.marginal_samples,
            cfg.marginal_burnin,
            cfg.marginal_leapfrog,
            cfg.hmc_step_size,
            cfg.hmc_target,
            tuning,
        )
        fitting = samples.z[: cfg.marginal_samples // 2].transpose(0, 1)
        stuck = int((distinct_points(fitting) <= cfg.nz).sum())
        seconds = time.perf_counter() - began
        for bandwidth in ("scott", "validated"):
            values = log_marginal_from_samples(samples.z, samples.log_joint, bandwidth).double()
            excess = float((values - importance.double()).max())
            print(
                f"| {tuning} | {bandwidth} | {float(values.mean()):.2f} | {float(values.median()):.2f} | "
                f"{int((values > 0).sum())} | {stuck} | {excess:.1f} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
