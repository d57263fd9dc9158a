"""One model's training state in a stack, unpadded, as a run's checkpoint holds it: its parameters (the names of
``VAE``), its Adagrad sums and step size, its random stream, its algorithm state (MCEM's chains) and the running
sum of its minibatch bounds. A state moves between stacks of any size, which is how runs are checkpointed, how the
§5 step-size candidates are trained side by side, and how a run started in a stack continues alone."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vae.algorithms.stack import Stack


def block(stack: Stack, j: int, name: str) -> tuple[Any, ...]:
    """Model j's block of the stacked tensor ``name``; a stack of one holds its tensors unstacked."""
    if stack.k == 1:
        return (...,)
    return (j, *(slice(0, n) for n in stack.shapes[j][name]))


def parameters_of(stack: Stack, j: int) -> dict[str, torch.Tensor]:
    """Model j's parameters, unpadded copies, by their ``VAE`` names."""
    return {name: p.detach()[block(stack, j, name)].clone() for name, p in stack.named_parameters()}


def run_state(stack: Stack, j: int) -> dict[str, Any]:
    """Model j's whole training state: ``state_dict``, ``optimizer_states`` (one torch optimizer state per
    optimizer, its step size in ``lr``), ``lr``, ``stream``, ``algorithm`` and ``running`` (the running sum of
    its minibatch bounds and the sample count it started at)."""
    names = {p: name for name, p in stack.named_parameters()}
    optimizer_states = []
    for opt in stack.optimizers:
        saved = opt.state_dict()
        params = [p for group in opt.param_groups for p in group["params"]]
        state = {
            i: {"sum": opt.state[p]["sum"][block(stack, j, names[p])].clone()}
            for i, p in enumerate(params)
            if "sum" in opt.state[p]
        }
        groups = [group | {"lr": stack.lrs[j]} for group in copy.deepcopy(saved["param_groups"])]
        optimizer_states.append({"state": state, "param_groups": groups})
    return dict(
        state_dict=parameters_of(stack, j),
        optimizer_states=optimizer_states,
        lr=stack.lrs[j],
        stream=stack.draws.state(j),
        algorithm=copy.deepcopy(stack.algorithm_state(j)),
        running=dict(sum=stack.running.sums[j].clone(), since=stack.running.since),
    )


@torch.no_grad()
def load_run_state(stack: Stack, j: int, state: dict[str, Any]) -> None:
    """Put a ``run_state`` into slot j. The models of a stack share the Adagrad step count."""
    named = dict(stack.named_parameters())
    for name, value in state["state_dict"].items():
        named[name][block(stack, j, name)] = value
    names = {p: name for name, p in named.items()}
    eps = stack.cfg.adagrad_eps
    for opt, saved in zip(stack.optimizers, state["optimizer_states"], strict=True):
        params = [p for group in opt.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            if "sum" in saved["state"].get(i, {}):
                opt.accumulator(p, eps)[block(stack, j, names[p])] = saved["state"][i]["sum"]
            elif "sum" in opt.state[p]:  # a model that has not stepped yet: its accumulator starts at eps
                opt.state[p]["sum"][block(stack, j, names[p])] = eps
        for group, saved_group in zip(opt.param_groups, saved["param_groups"], strict=True):
            group["step"] = saved_group["step"]
    lrs = list(stack.lrs)
    lrs[j] = state["lr"]
    stack.set_lrs(lrs)
    stack.draws.load(j, state["stream"])
    stack.load_algorithm_state(j, copy.deepcopy(state["algorithm"]))
    stack.running.sums[j] = state["running"]["sum"]
    stack.running.since = state["running"]["since"]
