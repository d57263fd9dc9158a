"""How App. D's estimate of log p(x) for one trained run moves with what the paper leaves open: the chains'
start, the burn-in, the number of posterior samples, the KDE's bandwidth, the chains' step-size tuning and which
datapoints are evaluated; beside the lower bound (eq. 7) and importance sampling with the encoder (k = 5000).
Every row summarises the same points of the same model: the mean, the median, and how many datapoints got a
positive estimate (log p(x) > 0, impossible for binary data). "default" is what the run logged
(``marginal_burnin``, z0 ~ q(z|x), ``marginal_samples``, ``marginal_bandwidth``, ``marginal_step_tuning``).

    .venv/bin/python bench/marginal_estimator.py RUN_FOLDER [--points 1000] [--seeds 0] [--only NAME ...]
        [--out FILE.csv]
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable

import torch

from vae import load_run
from vae.config import Config
from vae.data import load_dataset
from vae.models.marginal import best_prior_draw, log_marginal_hmc, log_marginal_is
from vae.models.vae import VAE
from vae.protocol.measurement import app_d_settings

Estimate = Callable[[torch.Tensor, VAE, torch.Generator], torch.Tensor]


def variants(cfg: Config) -> dict[str, Estimate]:
    """Name -> estimator(x, model, generator) returning log p(x) (or the bound) per datapoint."""
    hmc = dict(app_d_settings(cfg))

    def app_d(**change: float | str) -> Estimate:
        def run(x: torch.Tensor, model: VAE, g: torch.Generator) -> torch.Tensor:
            return log_marginal_hmc(x, model.decoder, model.encoder, g, **(hmc | change))

        return run

    def prior_start(x: torch.Tensor, model: VAE, g: torch.Generator) -> torch.Tensor:
        return log_marginal_hmc(x, model.decoder, None, g, z0=best_prior_draw(x, model.decoder, g), **hmc)

    return {
        "lower bound (eq. 7, L = 1)": lambda x, model, g: model.elbo(x, generator=g).detach(),
        "importance sampling, k = 5000": lambda x, model, g: log_marginal_is(x, model.decoder, model.encoder, g),
        "App. D, default": app_d(),
        "App. D, bandwidth: scott": app_d(bandwidth="scott"),
        "App. D, bandwidth: validated": app_d(bandwidth="validated"),
        "App. D, step tuning: batch": app_d(tuning="batch"),
        "App. D, step tuning: chain": app_d(tuning="chain"),
        "App. D, burn-in 1000": app_d(n_burnin=1000),
        "App. D, burn-in 0": app_d(n_burnin=0),
        "App. D, 200 samples": app_d(n_samples=200),
        "App. D, start: best of 1000 prior draws": prior_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder with a checkpoint (results/runs/<sweep>/<run>)")
    parser.add_argument("--points", type=int, default=1000, help="datapoints per set (default: %(default)s)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="the estimators' random streams (default: %(default)s)"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="the estimates whose names contain one of these")
    parser.add_argument("--out", help="also write the rows to this CSV file")
    args = parser.parse_args()
    model, cfg = load_run(args.run)
    train_x, test_x = load_dataset(cfg)
    n = args.points
    sets = {"train, first": train_x[:n], "test, first": test_x[:n], "test, next": test_x[n : 2 * n]}
    rows = []
    chosen = {k: v for k, v in variants(cfg).items() if not args.only or any(part in k for part in args.only)}
    for name, estimate in chosen.items():
        for split, x in sets.items():
            for seed in args.seeds:
                began = time.perf_counter()
                values = estimate(x, model, torch.Generator().manual_seed(seed)).double()
                rows.append(
                    dict(
                        estimate=name,
                        points=f"{split} {len(x)}",
                        seed=seed,
                        mean=f"{float(values.mean()):.2f}",
                        median=f"{float(values.median()):.2f}",
                        positive=int((values > 0).sum()),
                        max=f"{float(values.max()):.2f}",
                        seconds=f"{time.perf_counter() - began:.1f}",
                    )
                )
                print("  ".join(f"{v}" for v in rows[-1].values()), flush=True)
    with torch.no_grad():
        test_elbo = model.elbo(test_x, generator=torch.Generator().manual_seed(args.seeds[0])).double().mean()
    print(f"lower bound on all {len(test_x)} test points: {float(test_elbo):.2f}")
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
