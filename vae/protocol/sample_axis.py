"""The Figure 2 and 3 protocol on the "training samples evaluated" axis, written once for a stack of k >= 1
models: the budget, the evaluation points, §5's step-size selection, the evaluations, the logged rows, the
divergence check and the checkpointed state. The update rule is the stack's (``vae.algorithms``).

Two train curves are logged. ``train/elbo`` is a fresh evaluation of the bound on the whole training set at each
evaluation point, the suite's own. ``train/running_elbo`` is what the paper plotted as its train curve: every
``running_every`` samples, the average of the minibatch bounds of the iterations since the last one (the
authors' ``loop_va``), summed on the device as the steps run. Early on the two differ by tens of nats, since
the running average carries the whole early phase of training; compare the paper's train curves with it. The
§5 step-size selection runs without stopping, so a running point inside it is not logged: the first window then
reaches from 0 to the first point after it.

Speed: one optimizer step of these networks costs less than Lightning's per-step overhead, so one Lightning
``training_step`` runs up to ``steps_per_call`` iterations (manual optimization), replayed as one CUDA graph on
a GPU. Data stays on the device; minibatch indices and noise come from device generators; nothing syncs with
the host between logged points. Time is read only there, after a device sync (``PhaseClock``): training,
§5's selection, evaluations and checkpoints are each charged the wall time they took. The trajectory does not
depend on ``steps_per_call``: blocks of steps are cut at evaluation points.

Checkpoints: Lightning writes one checkpoint dictionary for the module; ``on_save_checkpoint`` replaces the
stack's stacked ``state_dict`` and ``optimizer_states`` by one entry per run under ``"runs"`` (that model's
unpadded parameters, hyper-parameters, optimizer states and ``sample_axis`` state), and the run folders'
``CheckpointIO`` writes each run's entry, with Lightning's own keys, as that run's checkpoint. Loading reverses
it, so a run's checkpoint has one format whatever the size of the stack that wrote it or reads it. A state that
is not finite is never saved: the run stops (``RunDiverged``) and keeps its last good checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers.logger import Logger

from vae.algorithms.graphs import GraphedSteps, graph_unsupported
from vae.algorithms.evaluation import eval_generators, evaluate
from vae.algorithms.stack import Stack
from vae.models.marginal import log_marginal_hmc, log_marginal_is
from vae.protocol.clock import PhaseClock
from vae.protocol.schedule import end_of, round_up, run_points, running_points


class RunDiverged(RuntimeError):
    """The bound or the parameters stopped being finite."""


def not_finite(state: Any, at: str = "") -> list[str]:
    """Where ``state`` (nested dicts, lists and tensors) holds a floating-point tensor with a NaN or infinity."""
    if isinstance(state, torch.Tensor):
        return [at] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [p for k, v in state.items() for p in not_finite(v, f"{at}.{k}" if at else str(k))]
    if isinstance(state, (list, tuple)):
        return [p for i, v in enumerate(state) for p in not_finite(v, f"{at}[{i}]")]
    return []


class SampleAxis(L.LightningModule):
    """Trains ``stack`` to its budget; run j is named ``names[j]`` and logs its evaluation points to
    ``loggers[j]``. The data come from the Trainer's datamodule (``train_x``, ``test_x``)."""

    def __init__(self, stack: Stack, names: Sequence[str], loggers: Sequence[Sequence[Logger]] | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.stack = stack
        self.cfg = stack.cfg
        self.names = list(names)
        self.run_loggers = [list(group) for group in loggers] if loggers else [[] for _ in names]
        self.lr_selection: list[dict[str, float]] = [{} for _ in names]
        self.history: list[list[dict[str, float]]] = [[] for _ in names]
        self.train_seconds = [0.0] * len(names)  # per run: runs stacked together may have different pasts
        self._graph: GraphedSteps | None = None
        self._since_eval = (0, 0.0)  # (samples, this session's train seconds) at the last logged point
        self._seconds = 0.0  # train seconds of this session
        self.clock = PhaseClock(torch.device("cpu"))  # this session's seconds per phase
        self._checkpointed = False  # a checkpoint was written since the last lap
        # the runner's points to stop at on a signal inside one long training step: ``between_steps`` after each
        # eager iteration (a whole MCEM iteration, say), ``between_blocks`` after each block of §5's selection and
        # each transition of an evaluation's HMC chains (the same points on every DDP rank)
        self.between_steps: Callable[[], None] = lambda: None
        self.between_blocks: Callable[[], None] = lambda: None
        self._synced_samples = 0

    @property
    def samples(self) -> int:
        return self.stack.samples

    @property
    def lrs(self) -> list[float]:
        return self.stack.lrs

    # ---------------------------------------------------------------- Lightning plumbing
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return list(self.stack.optimizers)

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        self.stack.attach(data.train_x.to(self.device), data.test_x.to(self.device))
        step = self.stack.samples_per_step
        self.points = set(run_points(self.cfg, step))
        self.running_points = set(running_points(self.cfg, step)) if self.stack.minibatch_bound else set()
        self.logged_points = sorted(self.points | self.running_points)
        self.budget = end_of(self.cfg, step)

    def on_train_start(self) -> None:
        self._since_eval = (self.samples, self._seconds)
        self._synced_samples = self.samples
        self.clock = PhaseClock(self.device)
        self.clock.start()

    def on_train_end(self) -> None:
        if self._checkpointed:
            self.clock.lap("checkpoint")
        else:
            self._lap_training()

    def _lap_training(self) -> float:
        """Charge the time since the last lap to training (and to every run's training seconds)."""
        spent = self.clock.lap("train")
        self._seconds += spent
        self.train_seconds = [t + spent for t in self.train_seconds]
        return spent

    @property
    def synced(self) -> tuple[int, float]:
        """(samples, host time) at the last synchronised point: what an honest rate is measured between."""
        return self._synced_samples, self.clock.synced

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses (``RunDiverged``) before any run's file is written when a run's state is not finite, so the
        last good checkpoints stay. The time to the next step is charged to checkpoints."""
        self._lap_training()
        self._checkpointed = True
        runs = [self._run_checkpoint(j) for j in range(self.stack.k)]
        for j, run in enumerate(runs):
            bad = not_finite(run)
            if bad:
                s = self.samples
                raise RunDiverged(
                    f"[{self.names[j]}] the parameters or the optimizer state are not finite at step "
                    f"{s // self.stack.samples_per_step} ({s} samples; {', '.join(bad[:3])}"
                    f"{', ...' if len(bad) > 3 else ''}), before the next evaluation point; the Adagrad step size "
                    f"{self.lrs[j]} is likely too large for this model. No checkpoint was written: the last good "
                    "one is kept. Restart with a smaller lr (in a new results folder).")
        del checkpoint["state_dict"], checkpoint["optimizer_states"]
        checkpoint["runs"] = runs

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        runs = checkpoint.pop("runs")
        at = {run["sample_axis"]["samples"] for run in runs}
        if len(at) > 1:
            raise ValueError(f"the runs {self.names} stand at different sample counts {sorted(at)}; a stack needs "
                             "them at the same count")
        for j, run in enumerate(runs):
            axis = run["sample_axis"]
            self.stack.load_run_state(j, dict(
                state_dict=run["state_dict"], optimizer_states=run["optimizer_states"], lr=axis["lr"],
                stream=dict(rng=axis["rng"], perm=axis["perm"], pos=axis["pos"]), algorithm=axis["chain_state"],
                running=axis["running"]))
            self.lr_selection[j], self.history[j] = axis["lr_selection"], axis["history"]
            self.train_seconds[j] = axis["train_seconds"]
        self.stack.samples = at.pop()
        # what Lightning restores next: the stack's own state, just loaded
        checkpoint["state_dict"] = self.state_dict()
        checkpoint["optimizer_states"] = [opt.state_dict() for opt in self.stack.optimizers]

    def _run_checkpoint(self, j: int) -> dict[str, Any]:
        """Run j's part of a checkpoint: a ``VAE`` checkpoint (``state_dict``, ``hyper_parameters``) with the
        optimizer states and the sample-axis state that resume it exactly."""
        state = self.stack.run_state(j)
        stream = state["stream"]
        return {
            "state_dict": state["state_dict"], "optimizer_states": state["optimizer_states"],
            "hyper_parameters": {"config": self.stack.configs[j].to_dict()},
            "sample_axis": dict(samples=self.samples, lr=state["lr"], lr_selection=self.lr_selection[j],
                                history=self.history[j], train_seconds=self.train_seconds[j], rng=stream["rng"],
                                perm=stream["perm"], pos=stream["pos"], chain_state=state["algorithm"],
                                running=state["running"]),
        }

    # ---------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self._checkpointed:
            self.clock.lap("checkpoint")
            self._checkpointed = False
        if self.cfg.lr is None and self.samples == 0:
            self.select_lr()
        self._log_if_due()
        if self.samples < self.budget:
            target = next(p for p in self.logged_points if p > self.samples)
            self._steps(min(self.cfg.steps_per_call, (target - self.samples) // self.stack.samples_per_step))
            self._log_if_due()
        if self.samples >= self.budget:
            self.trainer.should_stop = True

    def _steps(self, steps: int) -> None:
        """``steps`` iterations of the run's stack, replayed from a CUDA graph where one applies."""
        if steps == self.cfg.steps_per_call and graph_unsupported(self.stack) is None:
            if self._graph is None:
                self._graph = GraphedSteps(self.stack, steps)
            self._graph.run()
        else:
            self.stack.train_steps(steps, self.between_steps)

    def select_lr(self) -> None:
        """§5: pick each model's Adagrad global step size from ``lr_candidates`` by ``selection_score`` after the
        first ``lr_select_samples`` samples. The candidates of every model train side by side as one stack (one
        after another where the update rule stacks no models, or under DDP), each from the model's initial state
        and random stream; each model continues from its winner, so it equals a run started with that step size.
        A stop between blocks (``between_blocks``) leaves the runs at their initial state: the next session
        selects again from the start."""
        self._lap_training()
        stack, candidates = self.stack, self.cfg.lr_candidates
        steps = round_up(self.cfg.lr_select_samples, stack.samples_per_step) // stack.samples_per_step
        trials = [(j, lr) for lr in candidates for j in range(stack.k)]
        size = len(trials) if stack.stackable and self.cfg.devices * self.cfg.num_nodes == 1 else 1
        scores: dict[tuple[int, float], float] = {}
        finals: dict[tuple[int, float], dict[str, Any]] = {}
        for first in range(0, len(trials), size):
            chunk = trials[first:first + size]
            trial = stack.replicate([j for j, _ in chunk])
            trial.set_lrs([lr for _, lr in chunk])
            for done in range(0, steps, self.cfg.steps_per_call):  # a signal stops the selection between blocks
                trial.train_steps(min(self.cfg.steps_per_call, steps - done), self.between_steps)
                self.between_blocks()
            for i, (key, value) in enumerate(zip(chunk, trial.selection_score(eval_generators(trial)), strict=True)):
                scores[key] = value if math.isfinite(value) else -math.inf
                finals[key] = trial.run_state(i)
            samples = trial.samples
        for j, name in enumerate(self.names):
            best = max(candidates, key=lambda lr: scores[j, lr])
            if scores[j, best] == -math.inf:
                raise RunDiverged(f"[{name}] every Adagrad step size in {list(candidates)} diverged during "
                                  "selection; try smaller lr_candidates")
            stack.load_run_state(j, finals[j, best])
            self.lr_selection[j] = {str(lr): scores[j, lr] for lr in candidates}
            self.print(f"[{name}] Adagrad step size {best} picked; training-set bound after {samples} samples: "
                       + ", ".join(f"{lr}: {scores[j, lr]:.2f}" for lr in candidates))
            for logger in self.run_loggers[j]:
                logger.log_metrics({f"lr_select/{lr}": scores[j, lr] for lr in candidates}
                                   | {"samples": samples, "lr": best})
        stack.samples = samples
        spent = self.clock.lap("select")
        # the first rate counts one candidate's share of the selection time, as if the winner alone had trained
        self._since_eval = (0, self._seconds - spent / len(candidates))
        self._synced_samples = samples

    # ---------------------------------------------------------------- evaluation and logging
    def _log_if_due(self) -> None:
        """At an evaluation point, evaluate; at a running-average point, take the running average; log one row
        per run with what applies."""
        s = self.samples
        evaluate, running = s in self.points, s in self.running_points
        if not (evaluate or running) or (self.history[0] and self.history[0][-1]["samples"] >= s):
            return
        self._lap_training()
        self._synced_samples = s
        try:
            rows = self.measure() if evaluate else [{} for _ in range(self.stack.k)]
        except BaseException:  # a stop inside the evaluation: this point is evaluated again on resuming
            self.clock.lap("eval")
            raise
        if running:
            averages = self.stack.running.average(s, self.stack.samples_per_step, self.cfg.M)
            for row, value in zip(rows, averages, strict=True):
                row["train/running_elbo"] = value
        finite = torch.stack([torch.isfinite(p).reshape(self.stack.k, -1).all(1)
                              for p in self.stack.parameters()]).all(0).tolist()
        for j, row in enumerate(rows):
            if not (finite[j] and all(math.isfinite(v) for v in row.values())):
                shown = ", ".join(f"{k} {v}" for k, v in row.items())
                raise RunDiverged(
                    f"[{self.names[j]}] the evaluation or the parameters are not finite at step "
                    f"{s // self.stack.samples_per_step} ({s} samples; {shown}); the Adagrad step size "
                    f"{self.lrs[j]} is likely too large for this model. The last good checkpoint is kept and "
                    "nothing was written for this point: restart with a smaller lr (in a new results folder).")
        done, secs = self._since_eval
        rate = (s - done) / max(self._seconds - secs, 1e-9)
        self._since_eval = (s, self._seconds)
        for j, row in enumerate(rows):
            row = {"samples": s} | row | {"lr": self.lrs[j], "time/train_s": self.train_seconds[j],
                                          "time/samples_per_s": rate}
            self.history[j].append(row)
            for logger in self.run_loggers[j]:
                logger.log_metrics(row)
            shown = "  ".join(f"{k} {v:9.3f}" for k, v in row.items() if k.startswith(("train/", "test/")))
            self.print(f"[{self.names[j]}] samples {s:>11,d}  {shown}  {rate:8.0f} samples/s")
        self.clock.lap("eval")

    def last_evaluation(self, j: int) -> dict[str, float] | None:
        """Run j's last logged row with an evaluation (not a running average alone), or None."""
        return next((row for row in reversed(self.history[j]) if any(k.startswith("test/") for k in row)), None)

    def measure(self) -> list[dict[str, float]]:
        """One evaluation point for every model: the bound on the full train and test sets (Fig. 2) and, with
        ``evaluation: marginal``, log p(x) on the first ``marginal_points`` of each (Fig. 3, App. D)."""
        stack = self.stack
        rows: list[dict[str, float]] = [{} for _ in range(stack.k)]
        generators = eval_generators(stack)  # one stream per model: train bound, test bound, then log p(x)
        if stack.encoder is not None:
            for split, x in (("train", stack.train_x), ("test", stack.test_x)):
                for row, value in zip(rows, evaluate(stack, x, generators), strict=True):
                    row[f"{split}/elbo"] = value
        if self.cfg.evaluation == "marginal":
            for j, row in enumerate(rows):
                model = stack.model(j)
                for split, x in (("train", stack.train_x), ("test", stack.test_x)):
                    row[f"{split}/marginal"] = self.log_marginal(model, x[:self.cfg.marginal_points], generators[j])
        return rows

    def log_marginal(self, model: Any, x: torch.Tensor, generator: torch.Generator) -> float:
        """Average estimated log p(x) over ``x`` (App. D's HMC estimator, or importance sampling with the
        encoder as proposal). Every rank computes it in full: it is cheap next to training."""
        cfg = self.cfg
        if cfg.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        if cfg.marginal_estimator == "is":
            values = log_marginal_is(x, model.decoder, model.encoder, generator, k=cfg.marginal_is_k)
        else:
            values = log_marginal_hmc(x, model.decoder, model.encoder, generator, n_samples=cfg.marginal_samples,
                                      n_burnin=cfg.marginal_burnin, n_steps=cfg.marginal_leapfrog,
                                      step_size=cfg.hmc_step_size, target=cfg.hmc_target,
                                      between=self.between_blocks)
        return float(values.double().mean())
