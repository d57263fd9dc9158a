"""How far App. D's estimate of log p(x) and importance sampling lie from the exact value, on a trained run with
Nz ≤ 3 (Figure 3's models): log p(x) by quadrature (``vae.models.quadrature``) against

- App. D as the run's evaluations compute it (its ``marginal_step_tuning`` and ``marginal_bandwidth``), and with
  one step size per chain (``chain``);
- importance sampling with the encoder as proposal (the prior without one; k = the run's ``marginal_is_k``).

The estimators run on the split's first POINTS datapoints; the quadrature on its first EXACT of them and on the
WORST datapoints where App. D and importance sampling disagree most, so that the rare failures are covered
without gridding every point. The grid (``log_marginal_quadrature``'s defaults): Laplace-whitened, sinh-spaced,
0.25 standard deviations apart at the mode and reaching 48; on the first CHECK datapoints the spacing is
halved to show the rule has converged.

    .venv/bin/python bench/exact_marginal.py RUN_FOLDER [--split test] [--points 10000] [--exact 1000] [--worst 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from vae import load_run
from vae.config import Config
from vae.data import load_dataset
from vae.models.hmc import Tuning
from vae.models.marginal import best_prior_draw, log_marginal_hmc, log_marginal_is
from vae.models.quadrature import laplace_fit, log_marginal_quadrature
from vae.models.vae import VAE
from vae.protocol.measurement import app_d_settings


def app_d(model: VAE, cfg: Config, x: torch.Tensor, tuning: Tuning, seed: int) -> torch.Tensor:
    """App. D's estimate for each row of x, its chains started as the runs start them (z ~ q(z|x), or the best
    of 1000 prior draws without an encoder), with step-size tuning ``tuning``."""
    settings = app_d_settings(cfg) | {"tuning": tuning}
    return log_marginal_hmc(x, model.decoder, model.encoder, torch.Generator().manual_seed(seed), **settings).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder with a checkpoint, Nz <= 3 (results/runs/<sweep>/<run>)")
    parser.add_argument("--split", choices=["train", "test"], default="test", help="(default: %(default)s)")
    parser.add_argument(
        "--points", type=int, default=10000, help="estimators on the first POINTS (default: %(default)s)"
    )
    parser.add_argument("--exact", type=int, default=1000, help="quadrature on the first EXACT (default: %(default)s)")
    parser.add_argument("--worst", type=int, default=20, help="and on the WORST disagreements (default: %(default)s)")
    parser.add_argument("--check", type=int, default=20, help="half spacing on the first CHECK (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the estimators' random stream (default: %(default)s)")
    args = parser.parse_args()
    model, cfg = load_run(args.run)
    if cfg.nz > 3:
        parser.error(f"{args.run} has Nz = {cfg.nz}; the quadrature grids Nz <= 3")
    train_x, test_x = load_dataset(cfg)
    x = (train_x if args.split == "train" else test_x)[: args.points]
    print(f"{args.run}: {args.split}, estimators on the first {len(x)} points, seed {args.seed}", flush=True)

    began = time.perf_counter()
    estimates = {
        f"App. D, {cfg.marginal_step_tuning} (the run's)": app_d(model, cfg, x, cfg.marginal_step_tuning, args.seed),
    }
    other: Tuning = "chain" if cfg.marginal_step_tuning == "batch" else "batch"
    estimates[f"App. D, {other}"] = app_d(model, cfg, x, other, args.seed)
    estimates[f"importance sampling, k = {cfg.marginal_is_k}"] = log_marginal_is(
        x, model.decoder, model.encoder, torch.Generator().manual_seed(args.seed), k=cfg.marginal_is_k
    ).double()
    print(f"estimators: {time.perf_counter() - began:.0f} s", flush=True)

    runs_app_d, *_, importance = estimates.values()
    disagreement = (runs_app_d - importance).abs()
    disagreement[: args.exact] = -1.0
    worst = disagreement.argsort(descending=True)[: args.worst]
    worst = worst[disagreement[worst] >= 0]
    chosen = torch.cat([torch.arange(min(args.exact, len(x))), worst])
    xs = x[chosen]

    began = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    prior_start = best_prior_draw(xs, model.decoder, g)
    if model.encoder is None:
        start = prior_start
    else:
        with torch.no_grad():
            start = model.encoder(xs)[0]
    laplace = laplace_fit(model.decoder, xs, start)
    exact = log_marginal_quadrature(xs, model.decoder, laplace)
    # a second start, the best of 1000 prior draws: where Newton ends at another mode (more than one Laplace
    # standard deviation away), its box is integrated too and the larger value kept (each box's value is a
    # lower bound on log p(x), up to the rule's error)
    second = laplace_fit(model.decoder, xs, prior_start)
    shift = torch.linalg.solve_triangular(laplace.scale, (second.mode - laplace.mode)[:, :, None], upper=True)
    apart = (shift[:, :, 0].norm(dim=1) > 1.0).nonzero()[:, 0]
    log_px, raised = exact.log_px.clone(), 0.0
    if len(apart):
        other_box = log_marginal_quadrature(xs[apart], model.decoder, second.take(apart)).log_px
        raised = float((other_box - log_px[apart]).clamp(min=0).max())
        log_px[apart] = torch.maximum(log_px[apart], other_box)
    seconds = time.perf_counter() - began
    faces = chosen[exact.edge > -30].tolist()
    print(
        f"quadrature on {len(chosen)} points: {seconds:.0f} s; Newton converged on "
        f"{int(laplace.converged.sum())}; integrand at the faces above e^-30 of its peak on "
        f"{len(faces)} (largest {float(exact.edge.max()):.1f}; points {faces[:20]}); a start at the best prior "
        f"draw found another mode on {len(apart)}, raising log p(x) by up to {raised:.2f} nats",
        flush=True,
    )
    n_check = min(args.check, len(chosen))
    check = torch.arange(n_check)
    finer = log_marginal_quadrature(xs[check], model.decoder, laplace.take(check), spacing=0.125)
    change = finer.log_px - exact.log_px[:n_check]
    worst_change = int(change.abs().argmax())
    print(
        f"half the spacing on the first {n_check}: largest change {float(change[worst_change]):+.2e} nats "
        f"(point {int(chosen[worst_change])})",
        flush=True,
    )

    first = torch.arange(min(args.exact, len(x)))
    truth = log_px[: len(first)]
    print(f"\nfirst {len(first)} points: exact mean {float(truth.mean()):.3f}")
    print("| estimator | mean | mean - exact | median error | largest excess | largest shortfall | off by > 1 nat |")
    print("|---|---|---|---|---|---|---|")
    for name, values in estimates.items():
        error = values[first] - truth
        print(
            f"| {name} | {float(values[first].mean()):.3f} | {float(error.mean()):+.3f} | "
            f"{float(error.median()):+.3f} | {float(error.max()):+.1f} | {float(error.min()):+.1f} | "
            f"{int((error.abs() > 1).sum())} |"
        )
    print(
        f"\nthe {len(worst)} of the first {len(x)} points where App. D (the run's) and importance sampling differ most:"
    )
    print("| point | exact | " + " | ".join(estimates) + " | faces |")
    print("|---|---|" + "---|" * len(estimates) + "---|")
    for j, i in enumerate(worst.tolist()):
        k = len(first) + j
        cells = " | ".join(f"{float(v[i]):.1f}" for v in estimates.values())
        print(f"| {i} | {float(log_px[k]):.1f} | {cells} | {float(exact.edge[k]):.0f} |")


if __name__ == "__main__":
    main()
