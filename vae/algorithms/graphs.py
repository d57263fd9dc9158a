"""The GPU path: a block of ``steps`` iterations of a stack captured once as a CUDA graph and replayed.

These networks are so small that a step on a GPU costs its kernel launches and Python, not its arithmetic. A
CUDA graph replays the whole block (minibatch draws, forward, backward, Adagrad for every model) as one launch.
Eager execution stays the CPU path and the reference: replaying the graph performs the same kernels on the same
tensors, and each model's generator is registered with the graph, so a replay draws the random numbers eager
steps would have drawn and leaves each generator where eager steps would have left it.

Capture needs static shapes and no host decisions inside the block, so it is used only past Adagrad's warm-up
(the warm-up steps take another branch), with minibatches drawn with replacement (a permutation's refill is a
host decision), on one device (no collective in the graph), for update rules that allow it (not MCEM, whose
full-batch iterations are already large). The warm-up that capture needs (allocator, cuBLAS, autograd) runs on
a snapshot of the stack that is restored before capture, so capturing changes no number.
"""

from __future__ import annotations

import torch

from vae.algorithms.parallel import rank_and_world
from vae.algorithms.stack import Stack

WARMUP_ITERATIONS = 3  # eager iterations on a side stream before capture, as PyTorch's CUDA graph notes advise


def graph_unsupported(stack: Stack) -> str | None:
    """Why ``stack`` cannot be captured now, or None if it can."""
    cfg = stack.cfg
    if stack.device.type != "cuda":
        return "not on a CUDA device"
    if not cfg.cuda_graphs:
        return "cuda_graphs is off"
    if not cfg.replacement:
        return "minibatches without replacement redraw a permutation on the host"
    if not stack.graphable:
        return f"{cfg.algorithm} runs eagerly"
    if rank_and_world()[1] > 1:
        return "a DDP run all-reduces between steps"
    if any(g["step"] < g["warmup"] for opt in stack.optimizers for g in opt.param_groups):
        return "Adagrad is still in its warm-up"
    return None


class GraphedSteps:
    """``steps`` iterations of ``stack`` as one CUDA graph; ``run()`` replays them and advances the stack's
    sample counter and Adagrad step counts as ``stack.train_steps(steps)`` would."""

    def __init__(self, stack: Stack, steps: int) -> None:
        self.stack, self.steps = stack, steps
        saved = [stack.run_state(j) for j in range(stack.k)]
        side = torch.cuda.Stream(stack.device)
        side.wait_stream(torch.cuda.current_stream(stack.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_ITERATIONS):
                stack.step()
        torch.cuda.current_stream(stack.device).wait_stream(side)
        for j, state in enumerate(saved):
            stack.load_run_state(j, state)
        self.graph = torch.cuda.CUDAGraph()
        for generator in stack.draws.generators():
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph):
            for _ in range(steps):
                stack.step()
        for j, state in enumerate(saved):  # capture ran no kernel, but advanced the Python-side step counts
            stack.load_run_state(j, state)

    def run(self) -> None:
        self.graph.replay()
        for opt in self.stack.optimizers:
            for group in opt.param_groups:
                group["step"] += self.steps
        self.stack.samples += self.steps * self.stack.samples_per_step
