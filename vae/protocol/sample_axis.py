"""The Figure 2 and 3 protocol on the "training samples evaluated" axis, written once for a stack of k >= 1
models as a Lightning module: the budget and the evaluation points (``schedule``), §5's step-size selection
(``selection``), the evaluations (``measurement``), the logged rows, the divergence checks (``divergence``), the
checkpointed state (``run_checkpoint``) and the time per phase (``clock``). The update rule is the stack's
(``vae.algorithms``).

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
from vae.algorithms.stack import Stack
from vae.protocol.clock import TrainingTime
from vae.protocol.divergence import RunDiverged, check_checkpoint, check_evaluation
from vae.protocol.measurement import between_calls, measure
from vae.protocol.phases import PhaseDisplay
from vae.protocol.run_checkpoint import pack_run, unpack_runs
from vae.protocol.schedule import end_of, run_points, running_points
from vae.protocol.selection import selection_steps, try_step_sizes


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
        self.time = TrainingTime(len(names))
        self._graph: GraphedSteps | None = None
        self._checkpointed = False  # a checkpoint was written since the last lap
        # the runner's points to stop at on a signal inside one long training step: ``between_steps`` after each
        # eager iteration (a whole MCEM iteration, say), ``between_blocks`` after each block of §5's selection and
        # each transition of an evaluation's HMC chains (the same points on every DDP rank)
        self.between_steps: Callable[[], None] = lambda: None
        self.between_blocks: Callable[[], None] = lambda: None
        self.display = PhaseDisplay()  # where a long selection or evaluation stands, for the runner's display

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
        data = self.trainer.datamodule  # type: ignore[attr-defined]  # Lightning sets it; Trainer does not declare it
        self.stack.attach(data.train_x.to(self.device), data.test_x.to(self.device))
        step = self.stack.samples_per_step
        self.points = set(run_points(self.cfg, step))
        self.running_points = set(running_points(self.cfg, step)) if self.stack.minibatch_bound else set()
        self.logged_points = sorted(self.points | self.running_points)
        self.budget = end_of(self.cfg, step)

    def on_train_start(self) -> None:
        self.time.start(self.device, self.samples)

    def on_train_end(self) -> None:
        if self._checkpointed:
            self.time.clock.lap("checkpoint")
        else:
            self.time.lap_training()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses (``RunDiverged``) before any run's file is written when a run's state is not finite, so the
        last good checkpoints stay. The time to the next step is charged to checkpoints."""
        self.time.lap_training()
        self._checkpointed = True
        runs = [
            pack_run(self.stack, j, self.lr_selection[j], self.history[j], self.time.train_seconds[j])
            for j in range(self.stack.k)
        ]
        check_checkpoint(self.stack, self.names, runs)
        del checkpoint["state_dict"], checkpoint["optimizer_states"]
        checkpoint["runs"] = runs

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for j, axis in enumerate(unpack_runs(self.stack, self.names, checkpoint.pop("runs"))):
            self.lr_selection[j], self.history[j] = axis["lr_selection"], axis["history"]
            self.time.train_seconds[j] = axis["train_seconds"]
        # what Lightning restores next: the stack's own state, just loaded
        checkpoint["state_dict"] = self.state_dict()
        checkpoint["optimizer_states"] = [opt.state_dict() for opt in self.stack.optimizers]

    # ---------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self._checkpointed:
            self.time.clock.lap("checkpoint")
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
            self.stack.train_steps(steps, self.display.counted(self.between_steps))

    def _say(self, line: str) -> None:
        """A line of the module's (global rank 0's), through the display's writer."""
        if self.trainer.is_global_zero:
            self.display.write(line)

    def select_lr(self) -> None:
        """§5: pick each model's Adagrad step size (``vae.protocol.selection``); each model continues from its
        winner's state. A stop between blocks (``between_blocks``) leaves the runs at their initial state: the
        next session selects again from the start."""
        self.time.lap_training()
        candidates = self.cfg.lr_candidates
        with self.display.during("selecting the step size", "iteration", selection_steps(self.stack)):
            trials = try_step_sizes(self.stack, self.display.counted(self.between_steps), self.between_blocks)
        for j, name in enumerate(self.names):
            best = trials.best(j, candidates)
            scores = {lr: trials.scores[j, lr] for lr in candidates}
            if scores[best] == -math.inf:
                raise RunDiverged(
                    f"[{name}] every Adagrad step size in {list(candidates)} diverged during "
                    "selection; try smaller lr_candidates"
                )
            self.stack.load_run_state(j, trials.states[j, best])
            self.lr_selection[j] = {str(lr): score for lr, score in scores.items()}
            self._say(
                f"[{name}] Adagrad step size {best} picked; training-set bound after {trials.samples} "
                "samples: " + ", ".join(f"{lr}: {score:.2f}" for lr, score in scores.items())
            )
            for logger in self.run_loggers[j]:
                logger.log_metrics(
                    {f"lr_select/{lr}": score for lr, score in scores.items()} | {"samples": trials.samples, "lr": best}
                )
        self.stack.samples = trials.samples
        self.time.selected(trials.samples, len(candidates))

    # ---------------------------------------------------------------- evaluation and logging
    def _log_if_due(self) -> None:
        """At an evaluation point, evaluate; at a running-average point, take the running average; log one row
        per run with what applies."""
        s = self.samples
        evaluate, running = s in self.points, s in self.running_points
        if not (evaluate or running) or (self.history[0] and self.history[0][-1]["samples"] >= s):
            return
        self.time.lap_training()
        self.time.synced_samples = s
        try:
            rows = self._measure() if evaluate else [{} for _ in range(self.stack.k)]
        except BaseException:  # a stop inside the evaluation: this point is evaluated again on resuming
            self.time.clock.lap("eval")
            raise
        if running:
            averages = self.stack.running.average(s, self.stack.samples_per_step, self.cfg.M)
            for row, value in zip(rows, averages, strict=True):
                row["train/running_elbo"] = value
        check_evaluation(self.stack, self.names, rows)
        rate = self.time.rate(s)
        for j, row in enumerate(rows):
            row = (
                {"samples": s}
                | row
                | {"lr": self.lrs[j], "time/train_s": self.time.train_seconds[j], "time/samples_per_s": rate}
            )
            self.history[j].append(row)
            for logger in self.run_loggers[j]:
                logger.log_metrics(row)
            shown = "  ".join(f"{k} {v:9.3f}" for k, v in row.items() if k.startswith(("train/", "test/")))
            self._say(f"[{self.names[j]}] samples {s:>11,d}  {shown}  {rate:8.0f} samples/s")
        self.time.clock.lap("eval")

    def _measure(self) -> list[dict[str, float]]:
        """The evaluation point's rows (``measure``), the steps of its HMC chains counted for the display."""
        with self.display.during(f"evaluating at {self.samples:,d}", "HMC step", between_calls(self.stack)):
            return measure(self.stack, self.display.counted(self.between_blocks))

    def last_evaluation(self, j: int) -> dict[str, float] | None:
        """Run j's last logged row with an evaluation (not a running average alone), or None."""
        return next((row for row in reversed(self.history[j]) if any(k.startswith("test/") for k in row)), None)
