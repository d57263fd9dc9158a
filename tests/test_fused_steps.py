"""Fused steps: the update rules' arithmetic compiled by torch.compile (inductor's CPU backend here, its Triton
backend on CUDA in tests/test_gpu.py) computes what the eager reference computes. In float64 on a padded stack
of three latent sizes, after Adagrad's warm-up: the same parameters, running sums and stream positions, and
padded weights still exactly zero."""

import pytest
import torch
from helpers import stack_configs

from vae.algorithms import AEVB, Stack, WakeSleep
from vae.algorithms.run_state import block

STEPS = 8  # 3 warm-up steps, then 5 updates


def trained(kind: type[Stack], data: tuple[torch.Tensor, torch.Tensor], fused: bool, **overrides) -> Stack:
    stack = kind(stack_configs(adagrad_warmup=3, **overrides))
    stack.attach(*data)
    stack.fuse(fused)
    stack.train_steps(STEPS)
    return stack


@pytest.mark.parametrize(
    "kind, overrides",
    [(AEVB, {}), (WakeSleep, dict(decoder="gaussian-sigmoid-mean"))],
    ids=["aevb-bernoulli", "wakesleep-gaussian"],
)
def test_compiled_steps_equal_eager_steps(mnist, float64, kind, overrides):
    data = tuple(t.double() for t in mnist)
    eager, fused = trained(kind, data, False, **overrides), trained(kind, data, True, **overrides)
    assert fused.region.on and not eager.region.on and fused.region.compiled  # the compiled regions did run
    for (name, p), q in zip(eager.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
        mask = torch.ones_like(p, dtype=torch.bool)
        for part in (block(fused, j, name) for j in range(fused.k)):
            mask[part] = False
        assert not q.detach()[mask].any(), f"padding of {name} moved"
    torch.testing.assert_close(fused.running.sums, eager.running.sums, rtol=1e-12, atol=1e-9)
    assert eager.running.sums.abs().min() > 0  # the running sums were accumulated
    for e, f in zip(eager.draws.generators(), fused.draws.generators(), strict=True):
        assert torch.equal(e.get_state(), f.get_state()), "fused steps drew other random numbers"
