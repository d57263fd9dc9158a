"""§5's step-size selection: "the best step size of a few candidates, picked by the training-set bound after
the first few iterations". Every model of a stack tries every candidate of ``lr_candidates`` for
``lr_select_samples`` samples, each from the model's initial state and random stream; the scores and the
trained states come back, so a model can continue from its winner and equal a run started with that step size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vae.algorithms.evaluation import eval_generators
from vae.algorithms.stack import Stack
from vae.protocol.schedule import round_up


@dataclass(frozen=True)
class Trials:
    """The outcome of a selection: ``scores[j, lr]`` (the selection score, -inf where it is not finite) and
    ``states[j, lr]`` (model j's run state after training with ``lr``), both after ``samples`` samples."""

    scores: dict[tuple[int, float], float]
    states: dict[tuple[int, float], dict[str, Any]]
    samples: int

    def best(self, j: int, candidates: tuple[float, ...]) -> float:
        """Model j's winner: the first candidate of the highest score."""
        return max(candidates, key=lambda lr: self.scores[j, lr])


def trial_groups(stack: Stack) -> tuple[list[list[tuple[int, float]]], int]:
    """The trials (model j, step size) in the groups that train together, and the iterations each group trains:
    every trial side by side as one stack, or one after another where the update rule stacks no models or under
    DDP."""
    cfg = stack.cfg
    steps = round_up(cfg.lr_select_samples, stack.samples_per_step) // stack.samples_per_step
    trials = [(j, lr) for lr in cfg.lr_candidates for j in range(stack.k)]
    size = len(trials) if stack.stackable and cfg.devices * cfg.num_nodes == 1 else 1
    return [trials[first : first + size] for first in range(0, len(trials), size)], steps


def selection_steps(stack: Stack) -> int:
    """The iterations ``try_step_sizes`` trains in all; ``between_steps`` runs after each."""
    groups, steps = trial_groups(stack)
    return len(groups) * steps


def try_step_sizes(
    stack: Stack, between_steps: Callable[[], None] = lambda: None, between_blocks: Callable[[], None] = lambda: None
) -> Trials:
    """Train replicas of ``stack``'s models with each of ``lr_candidates`` for ``lr_select_samples`` samples, in
    the groups of ``trial_groups``; ``between_steps`` runs after each iteration, ``between_blocks`` after each
    block of ``steps_per_call`` iterations (a signal stops the selection there). ``stack`` itself is left as it
    was."""
    cfg = stack.cfg
    groups, steps = trial_groups(stack)
    scores: dict[tuple[int, float], float] = {}
    states: dict[tuple[int, float], dict[str, Any]] = {}
    samples = 0
    for chunk in groups:
        trial = stack.replicate([j for j, _ in chunk])
        trial.set_lrs([lr for _, lr in chunk])
        for done in range(0, steps, cfg.steps_per_call):
            trial.train_steps(min(cfg.steps_per_call, steps - done), between_steps)
            between_blocks()
        for i, (key, value) in enumerate(zip(chunk, trial.selection_score(eval_generators(trial)), strict=True)):
            scores[key] = value if math.isfinite(value) else -math.inf
            states[key] = trial.run_state(i)
        samples = trial.samples
    return Trials(scores, states, samples)
