"""A stack of k models (vae.algorithms.stack) equals k stacks of one trained separately, on real MNIST.

Models of different Nz (3, 5, 10, padded to 10) and seeds, small hidden layers, 30 steps past a 5-step
Adagrad warmup. In float32 the stack agrees to rounding (batched versus single matrix products sum in another
order); in float64 they agree to ~1e-12 (parameters) and ~1e-9 (bounds), which pins every variant
(minibatches without replacement, dynamic binarization, estimator A with L = 2, Gaussian decoders, wake-sleep)
far below any real discrepancy.
"""

import dataclasses

import pytest
import torch
from helpers import STACK_BASE, stack_configs

from vae.algorithms import AEVB, ALGORITHMS, Stack
from vae.algorithms.evaluation import eval_generators, evaluate
from vae.algorithms.run_state import parameters_of
from vae.config import Config, ConfigError, make_config
from vae.models import stacked
from vae.models.vae import VAE

STEPS = 30
BASE = STACK_BASE
configs = stack_configs


def train_alone(cfg: Config, train_x: torch.Tensor, steps: int) -> Stack:
    """The run of ``cfg`` trained alone: a stack of one."""
    model = ALGORITHMS[cfg.algorithm]([cfg]).to(train_x.device)
    model.attach(train_x, train_x[:1])
    model.train_steps(steps)
    return model


def assert_padding_is_zero(stack: Stack) -> None:
    for name, p in stack.named_parameters():
        for j, shapes in enumerate(stack.shapes):
            padded = p.detach()[j].clone()
            padded[tuple(slice(0, n) for n in shapes[name])] = 0
            assert torch.count_nonzero(padded) == 0, f"{name}: model {j}'s padding is not zero"


def assert_stack_equals_separate(
    cfgs: list[Config],
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    atol: float,
    rtol: float,
    bound_atol: float,
    lrs: list[float] | None = None,
) -> None:
    """With ``lrs``, model j of the stack steps with ``lrs[j]`` and is compared with the run alone at that lr."""
    stack = ALGORITHMS[cfgs[0].algorithm](cfgs)
    stack.attach(train_x, test_x)
    if lrs:
        stack.set_lrs(lrs)
        cfgs = [dataclasses.replace(cfg, lr=lr) for cfg, lr in zip(cfgs, lrs, strict=True)]
    stack.train_steps(STEPS)
    assert stack.samples == STEPS * cfgs[0].M
    assert_padding_is_zero(stack)
    bounds = evaluate(stack, test_x, eval_generators(stack))
    for j, cfg in enumerate(cfgs):
        alone = train_alone(cfg, train_x, STEPS)
        start = VAE(cfg).state_dict()
        mine = parameters_of(stack, j)
        for name, value in parameters_of(alone, 0).items():
            assert not torch.allclose(value, start[name], atol=atol, rtol=rtol), f"{name} did not train"
            where = f"model {j} {name}"
            torch.testing.assert_close(mine[name], value, atol=atol, rtol=rtol, msg=lambda m, w=where: f"{w}: {m}")
        (normal,) = evaluate(alone, test_x, eval_generators(alone))
        assert bounds[j] == pytest.approx(normal, abs=bound_atol), f"model {j}"
        # the running sum of its minibatch bounds (padded latent dimensions add nothing to it)
        assert float(stack.running.sums[j]) == pytest.approx(
            float(alone.running.sums[0]), abs=bound_atol * cfg.M * STEPS
        )


def test_each_model_starts_from_its_own_initialisation_and_unstacks_into_a_vae(mnist):
    stack = AEVB(configs())
    for j, cfg in enumerate(configs()):
        model = VAE(cfg)
        expected = model.state_dict()
        mine = parameters_of(stack, j)
        assert mine.keys() == expected.keys()
        assert all(torch.equal(mine[k], expected[k]) for k in expected)
        model.load_state_dict(mine)  # strict: names and unpadded shapes match
    assert_padding_is_zero(stack)


def test_stacked_training_equals_separate_training_float32(mnist):
    """The Figure 2 MNIST setting (Bernoulli decoder, estimator B, minibatches with replacement) in float32:
    parameters (magnitude ~0.1 after 30 steps) to 2e-5 absolute, the test-set bound (~-216 nats) to 1e-4."""
    assert_stack_equals_separate(configs(), *mnist, atol=2e-5, rtol=1e-3, bound_atol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(replacement=False, binarize="dynamic"),
        dict(estimator="A", L=2),
        dict(decoder="gaussian"),
        dict(decoder="gaussian-sigmoid-mean", estimator="A"),
        dict(algorithm="wakesleep"),
        dict(algorithm="wakesleep", binarize="dynamic", replacement=False),
        dict(algorithm="wakesleep", decoder="gaussian-sigmoid-mean"),
        dict(algorithm="wakesleep", encoder_logvar_scale=0.1, encoder_logvar_zero_init=True),
    ],
    ids=[
        "fig2",
        "permutation-dynamic",
        "estimatorA-L2",
        "gaussian",
        "gaussian-sigmoid-A",
        "wakesleep",
        "wakesleep-permutation-dynamic",
        "wakesleep-gaussian",
        "wakesleep-authors-logvar-head",
    ],
)
def test_stacked_training_equals_separate_training_float64(mnist, float64, overrides):
    train_x, test_x = (t.double() for t in mnist)
    assert_stack_equals_separate(configs(**overrides), train_x, test_x, atol=1e-9, rtol=1e-8, bound_atol=1e-7)


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(decoder="gaussian", estimator="A", L=2), dict(algorithm="wakesleep")],
    ids=["fig2", "gaussian-estimatorA-L2", "wakesleep"],
)
def test_the_padded_and_masked_kernel_equals_separate_training_float64(mnist, float64, monkeypatch, overrides):
    """The kernel every GPU stack of mixed latent sizes runs (one ``baddbmm`` per layer, padded outputs masked),
    forced on the CPU, against the runs alone (plain ``addmm`` on unpadded layers)."""
    calls = []
    monkeypatch.setattr(stacked, "batched", lambda v: calls.append(v.shape) or True)
    train_x, test_x = (t.double() for t in mnist)
    assert_stack_equals_separate(configs(**overrides), train_x, test_x, atol=1e-9, rtol=1e-8, bound_atol=1e-7)
    assert calls, "the stack did not run the batched kernel"


def test_each_model_of_a_stack_steps_with_its_own_step_size(mnist, float64):
    """The step sizes picked per model (§5) are per-model Adagrad step sizes in one optimizer."""
    train_x, test_x = (t.double() for t in mnist)
    assert_stack_equals_separate(
        configs(), train_x, test_x, atol=1e-9, rtol=1e-8, bound_atol=1e-7, lrs=[0.005, 0.02, 0.08]
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([dict(), dict(hidden=60)], r"differ in hidden: \[50, 60\]"),
        ([dict(), dict(lr=0.1, M=50)], r"differ in M: \[100, 50\]; lr: \[0.02, 0.1\]"),
        ([dict(devices=2), dict(devices=2, seed=1)], "one device"),
        ([dict(), dict(algorithm="wakesleep")], "differ in algorithm"),
        ([], "at least one"),
    ],
)
def test_stacks_that_cannot_match_the_runs_alone_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        AEVB([make_config({**BASE, **o}) for o in overrides])


@pytest.mark.parametrize("fused", [True, False], ids=["fused-cpu-kernel", "multi-tensor"])
def test_both_adagrad_updates_give_each_model_its_own_step_size(mnist, float64, fused):
    """The CPU's fused kernel (run once per distinct step size) and the multi-tensor update that GPUs and CUDA
    graphs use give each model the step of a run alone at its step size."""
    train_x, test_x = (t.double() for t in mnist)
    stack = AEVB(configs())
    stack.attach(train_x, test_x)
    for opt in stack.optimizers:
        opt.fused = fused
    stack.set_lrs([0.005, 0.02, 0.08])
    stack.train_steps(STEPS)
    for j, cfg in enumerate(configs()):
        alone = train_alone(dataclasses.replace(cfg, lr=[0.005, 0.02, 0.08][j]), train_x, STEPS)
        for name, value in parameters_of(alone, 0).items():
            torch.testing.assert_close(parameters_of(stack, j)[name], value, atol=1e-9, rtol=1e-8)
