"""One run's part of a stack's checkpoint.

A run's entry is a ``VAE`` checkpoint (``state_dict``, ``hyper_parameters``) with the optimizer states and the
``sample_axis`` state (samples, step size, selection scores, logged rows, seconds, random stream and the kind of
device it belongs to, algorithm state, running average) that resume it exactly, whatever the size of the stack
that writes or reads it."""

from __future__ import annotations

from typing import Any

from vae.algorithms.stack import Stack


def pack_run(
    stack: Stack, j: int, lr_selection: dict[str, float], history: list[dict[str, float]], train_seconds: float
) -> dict[str, Any]:
    """Run j's checkpoint entry, with the protocol's own record of the run (selection scores, logged rows,
    training seconds)."""
    state = stack.run_state(j)
    stream = state["stream"]
    return {
        "state_dict": state["state_dict"],
        "optimizer_states": state["optimizer_states"],
        "hyper_parameters": {"config": stack.configs[j].to_dict()},
        "sample_axis": dict(
            samples=stack.samples,
            device=stack.device.type,
            lr=state["lr"],
            lr_selection=lr_selection,
            history=history,
            train_seconds=train_seconds,
            rng=stream["rng"],
            perm=stream["perm"],
            pos=stream["pos"],
            chain_state=state["algorithm"],
            running=state["running"],
        ),
    }


def unpack_runs(stack: Stack, names: list[str], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load the entries ``runs`` (one per model, in order) into ``stack``; returns each run's ``sample_axis``
    state, from which the protocol restores its record. Runs standing at different sample counts are refused."""
    at = {run["sample_axis"]["samples"] for run in runs}
    if len(at) > 1:
        raise ValueError(
            f"the runs {names} stand at different sample counts {sorted(at)}; a stack needs them at the same count"
        )
    for j, run in enumerate(runs):
        axis = run["sample_axis"]
        stack.load_run_state(
            j,
            dict(
                state_dict=run["state_dict"],
                optimizer_states=run["optimizer_states"],
                lr=axis["lr"],
                stream=dict(rng=axis["rng"], perm=axis["perm"], pos=axis["pos"]),
                algorithm=axis["chain_state"],
                running=axis["running"],
            ),
        )
    stack.samples = at.pop()
    return [run["sample_axis"] for run in runs]
