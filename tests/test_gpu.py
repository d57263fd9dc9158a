"""The GPU path (``pytest -m gpu``, skipped without CUDA; ``make gpu-check`` runs it on a GPU machine).

CUDA against CPU needs the same random numbers on both devices, which their generators do not give: there
the stacks draw from host generators (``HostDraws``) and copy the draws to the device, so the two devices run
the same arithmetic, compared in float64. Everything else uses the suite's own device generators.
"""

import dataclasses
import os
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from helpers import STACK_MODELS, stack_configs, train_command

from vae.algorithms import AEVB, Stack, WakeSleep
from vae.algorithms.draws import Draws
from vae.algorithms.evaluation import eval_generators, evaluate
from vae.algorithms.graphs import GraphedSteps, graph_unsupported
from vae.algorithms.run_state import parameters_of
from vae.config import Config
from vae.runs.folder import RunFolder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

STEPS = 30
MODELS = STACK_MODELS
configs = stack_configs


class HostDraws(Draws):
    """Draws every training random number from CPU generators (one per model, seeded as the device streams) and
    copies it to the device, so a CPU stack and a CUDA stack see the same numbers. Draws from given generators
    (the evaluation's) stay the device's."""

    def attach(self, device: torch.device) -> None:
        super().attach(device)
        self.device = device
        self.host = [torch.Generator().manual_seed(cfg.seed + 1) for cfg in self.configs]
        self.used: set[str] = set()

    def minibatch(self, train_x: torch.Tensor) -> torch.Tensor:
        self.used.add("minibatch")
        cfg = self.configs[0]
        idx = torch.stack([torch.randint(len(train_x), (cfg.M,), generator=g) for g in self.host])
        x = train_x[idx.to(self.device)]
        return self.bernoulli(x) if cfg.binarize == "dynamic" else x

    def bernoulli(self, p: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        if generators:
            return super().bernoulli(p, generators)
        self.used.add("bernoulli")
        u = torch.stack([torch.rand(p.shape[1:], generator=g, dtype=torch.float64) for g in self.host])
        return (u.to(self.device) < p).to(p.dtype)

    def normal(
        self, *shape: int, generators: Sequence[torch.Generator] | None = None, sizes: Sequence[int] | None = None
    ) -> torch.Tensor:
        if generators:
            return super().normal(*shape, generators=generators, sizes=sizes)
        self.used.add("normal")
        sizes = sizes or [cfg.nz for cfg in self.configs]
        *lead, n = shape
        out = torch.zeros((*lead, len(self.configs), n, max(sizes)), dtype=torch.float64)
        for j, (size, g) in enumerate(zip(sizes, self.host, strict=True)):
            out[..., j, :, :size] = torch.randn((*lead, n, size), generator=g, dtype=torch.float64)
        return out.to(self.device, torch.get_default_dtype())


class HostAEVB(AEVB):
    def __init__(self, configs: Sequence[Config]) -> None:
        super().__init__(configs)
        self.draws = HostDraws(configs)


class HostWakeSleep(WakeSleep):
    def __init__(self, configs: Sequence[Config]) -> None:
        super().__init__(configs)
        self.draws = HostDraws(configs)


def trained(
    kind: type[Stack], cfgs: list[Config], data: tuple[torch.Tensor, torch.Tensor], device: str, steps: int = STEPS
) -> Stack:
    stack = kind(cfgs).to(device)
    stack.attach(*(t.to(device) for t in data))
    stack.train_steps(steps)
    return stack


def assert_same_parameters(a: Stack, b: Stack, rtol: float, atol: float) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(
            p.detach().cpu(), q.detach().cpu(), rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize(
    "kind, overrides",
    [
        (HostAEVB, {}),
        (HostWakeSleep, {}),
        (HostAEVB, dict(binarize="dynamic", decoder="bernoulli")),
        (HostWakeSleep, dict(decoder="gaussian-sigmoid-mean")),
    ],
    ids=["aevb", "wakesleep", "aevb-dynamic", "wakesleep-gaussian"],
)
def test_cuda_equals_cpu_in_float64(mnist, float64, kind, overrides):
    """Eager kernels on both devices (compile: false): the fused steps are compared with these on CUDA below, so
    a difference is placed in the device or in the fusion."""
    data = tuple(t.double() for t in mnist)
    cpu = trained(kind, configs(compile=False, **overrides), data, "cpu")
    cuda = trained(kind, configs(compile=False, **overrides), data, "cuda")
    assert_same_parameters(cpu, cuda, rtol=1e-6, atol=1e-9)
    assert cpu.draws.used == cuda.draws.used >= {"minibatch", "normal"}  # both drew from the host streams
    torch.testing.assert_close(cpu.running.sums, cuda.running.sums.cpu(), rtol=1e-9, atol=1e-6)
    generators = [torch.Generator().manual_seed(5) for _ in MODELS]
    x = data[1][:500]
    eps = torch.randn((1, len(MODELS), 500, 10), generator=generators[0], dtype=torch.float64)
    with torch.no_grad():
        a = cpu.bound(x.expand(len(MODELS), *x.shape), eps)
        b = cuda.bound(x.cuda().expand(len(MODELS), *x.shape), eps.cuda())
    torch.testing.assert_close(a, b.cpu(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kind, overrides",
    [(AEVB, {}), (WakeSleep, {}), (WakeSleep, dict(decoder="gaussian-sigmoid-mean"))],
    ids=["aevb", "wakesleep", "wakesleep-gaussian"],
)
def test_graphed_steps_equal_eager_steps(mnist, kind, overrides):
    """The same kernels on the same tensors, the generators registered with the graph: the same numbers. Eager
    kernels on both sides (compile: false), so a difference lies in the capture, not in the fusion."""
    cfgs = configs(compile=False, **overrides)
    eager = trained(kind, cfgs, mnist, "cuda", steps=10)  # past the warm-up of 5 steps
    graphed = trained(kind, cfgs, mnist, "cuda", steps=10)
    assert graph_unsupported(graphed) is None
    eager.train_steps(30)
    block = GraphedSteps(graphed, 10)
    for _ in range(3):
        block.run()
    assert graphed.samples == eager.samples
    assert_same_parameters(eager, graphed, rtol=1e-6, atol=1e-7)
    # summed inside the graph
    torch.testing.assert_close(eager.running.sums, graphed.running.sums, rtol=1e-9, atol=1e-6)
    for e, g in zip(eager.draws.generators(), graphed.draws.generators(), strict=True):
        assert torch.equal(e.get_state(), g.get_state()), "the graph left a generator elsewhere than eager steps"
    assert evaluate(eager, mnist[1].cuda(), eval_generators(eager)) == pytest.approx(
        evaluate(graphed, mnist[1].cuda(), eval_generators(graphed)), rel=1e-6
    )


def fused_or_eager(
    kind: type[Stack], cfgs: list[Config], data: tuple[torch.Tensor, torch.Tensor], fused: bool, steps: int
) -> Stack:
    """A stack trained past its warm-up, then ``steps`` more: fused and replayed from a graph, or eager."""
    # past the warm-up
    stack = trained(kind, [dataclasses.replace(cfg, compile=fused) for cfg in cfgs], data, "cuda", steps=10)
    assert stack.region.on == fused
    if fused:
        block = GraphedSteps(stack, steps)
        block.run()
    else:
        stack.train_steps(steps)
    return stack


FUSED_KINDS = pytest.mark.parametrize(
    "kind, overrides",
    [
        (AEVB, {}),
        (AEVB, dict(decoder="gaussian-sigmoid-mean")),
        (WakeSleep, {}),
        (WakeSleep, dict(decoder="gaussian-sigmoid-mean")),
    ],
    ids=["aevb", "aevb-gaussian", "wakesleep", "wakesleep-gaussian"],
)


@FUSED_KINDS
def test_compiled_steps_equal_eager_steps_on_cuda_in_float64(mnist, float64, kind, overrides):
    """Inductor's Triton kernels without a CUDA graph compute what the eager kernels compute: with the test
    beside it, a difference is placed in the fusion or in its capture."""
    data = tuple(t.double() for t in mnist)
    eager = trained(kind, configs(compile=False, **overrides), data, "cuda")
    fused = trained(kind, configs(compile=True, **overrides), data, "cuda")
    assert fused.region.compiled and not eager.region.compiled
    assert_same_parameters(eager, fused, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(eager.running.sums, fused.running.sums, rtol=1e-12, atol=1e-8)


@FUSED_KINDS
def test_compiled_graphed_steps_equal_eager_steps_in_float64(mnist, float64, kind, overrides):
    """Inductor's Triton kernels inside the CUDA graph compute what the eager kernels compute: in float64 the
    padded stack's parameters, running sums and streams agree after 20 fused steps."""
    data = tuple(t.double() for t in mnist)
    eager = fused_or_eager(kind, configs(**overrides), data, False, 20)
    fused = fused_or_eager(kind, configs(**overrides), data, True, 20)
    assert fused.region.compiled and not eager.region.compiled
    assert_same_parameters(eager, fused, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(eager.running.sums, fused.running.sums, rtol=1e-12, atol=1e-8)
    for e, f in zip(eager.draws.generators(), fused.draws.generators(), strict=True):
        assert torch.equal(e.get_state(), f.get_state())


def test_tf32_is_the_configs_choice_and_changes_only_rounding(mnist):
    highest = fused_or_eager(AEVB, configs(), mnist, True, 20)
    assert not torch.backends.cuda.matmul.allow_tf32
    tf32 = fused_or_eager(AEVB, configs(matmul_precision="tf32"), mnist, True, 20)
    assert torch.backends.cuda.matmul.allow_tf32
    differ = [not torch.equal(p, q) for p, q in zip(highest.parameters(), tf32.parameters(), strict=True)]
    assert any(differ), "TF32 changed no number: the switch did not reach the matrix products"
    x = mnist[1].cuda()
    bounds = [evaluate(s, x, eval_generators(s)) for s in (highest, tf32)]
    torch.backends.cuda.matmul.allow_tf32 = False
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-2)


def _ddp_rank(rank: int, world: int, out: Path, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One rank of a gloo DDP group on the one GPU: trains the fused stack of one and saves its parameters."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    stack = AEVB([configs(M=101)[0]]).to("cuda")
    stack.attach(*(t.to("cuda") for t in data))
    assert stack.region.on and graph_unsupported(stack) is not None  # fused, but no graph across the all-reduce
    stack.train_steps(20)
    x = data[1].to("cuda")
    torch.save(
        dict(bound=evaluate(stack, x, eval_generators(stack)), running=stack.running.sums.cpu()), out / f"rank{rank}.pt"
    )
    dist.destroy_process_group()


def test_two_ranks_sharing_the_gpu_equal_one_rank(tmp_path, mnist):
    """The multi-GPU path (device placement, fused steps, gradient all-reduce) with two gloo ranks on one GPU:
    M = 101 split 51 + 50; the test bound and the running sums equal a single process's to float32 summation
    order (compared as bounds: Adagrad's normalized steps amplify rounding in single weights)."""
    os.environ["TEST_PORT"] = str(29500 + os.getpid() % 1000)
    mp.spawn(_ddp_rank, args=(2, tmp_path, mnist), nprocs=2, join=True)
    single = AEVB([configs(M=101)[0]]).to("cuda")
    single.attach(*(t.to("cuda") for t in mnist))
    single.train_steps(20)
    x = mnist[1].to("cuda")
    (bound,) = evaluate(single, x, eval_generators(single))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["bound"][0] for r in ranks] == pytest.approx([bound, bound], rel=1e-5)
    torch.testing.assert_close(
        ranks[0]["running"] + ranks[1]["running"], single.running.sums.cpu(), rtol=1e-5, atol=1e-2
    )


def test_a_stack_on_cuda_equals_its_runs_alone(mnist, float64):
    data = tuple(t.double() for t in mnist)
    stack = trained(AEVB, configs(), data, "cuda")
    for j, cfg in enumerate(configs()):
        alone = trained(AEVB, [cfg], data, "cuda")
        for name, value in parameters_of(alone, 0).items():
            torch.testing.assert_close(parameters_of(stack, j)[name], value, rtol=1e-8, atol=1e-10)


KILL = dict(
    hidden=50,
    nz=2,
    n_train=2000,
    budget=2_000_000,
    eval_start=5000,
    lr_select_samples=5000,
    adagrad_warmup=10,
    wandb="disabled",
    checkpoint_minutes=0.005,
    accelerator="gpu",
    steps_per_call=20,
)


def test_sigkill_then_rerun_on_cuda_equals_an_uninterrupted_run(tmp_path, data_root):
    sweep = tmp_path / "kill.yaml"
    sweep.write_text(yaml.safe_dump({"name": "kill", "base": KILL}))

    def command(results: Path) -> list[str]:
        return train_command(sweep, results, data_root)

    run = RunFolder.of(tmp_path / "killed", "kill", "seed0")
    proc = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not run.has_checkpoint():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    time.sleep(random.uniform(0.5, 2.0))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before the kill"
    subprocess.run(command(tmp_path / "killed"), check=True, capture_output=True)
    subprocess.run(command(tmp_path / "clean"), check=True, capture_output=True)
    killed, clean = run.metrics(), RunFolder.of(tmp_path / "clean", "kill", "seed0").metrics()
    assert list(killed["samples"]) == list(clean["samples"])
    cols = ["train/elbo", "test/elbo"]
    pd.testing.assert_frame_equal(killed[cols], clean[cols], rtol=1e-6)
