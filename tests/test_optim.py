"""The Adagrad of the authors' code, checked against a direct NumPy transcription of its update rule."""

import numpy as np
import torch

from vae.algorithms.optim import Adagrad


def reference(w0, grads_fn, lr, eps, warmup, decay, steps):
    w, acc = w0.copy(), np.zeros_like(w0)
    for t in range(1, steps + 1):
        g = grads_fn(w) + decay * w
        acc += g * g
        if t > warmup:
            w = w - lr * g / np.sqrt(acc + eps)
    return w


def quadratic_grad(w):
    return 3.0 * (w - 1.0) + np.sin(w)


def run_ours(w0, lr, eps, warmup, decay, steps):
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = Adagrad([w], lr=lr, eps=eps, warmup=warmup, weight_decay=decay)
    for _ in range(steps):
        w.grad = None
        (1.5 * (w - 1.0) ** 2 - torch.cos(w)).sum().backward()
        opt.step()
    return w.detach().numpy()


def test_update_warmup_and_decay_match_the_reference():
    w0 = np.array([0.3, -2.0, 5.0, 0.0], dtype=np.float64)
    for warmup, decay in [(0, 0.0), (3, 0.0), (2, 0.7)]:
        ours = run_ours(w0, 0.1, 1e-8, warmup, decay, 25)
        np.testing.assert_allclose(ours, reference(w0, quadratic_grad, 0.1, 1e-8, warmup, decay, 25), rtol=1e-12)


def test_warmup_steps_leave_parameters_unchanged():
    w0 = np.array([0.3, -2.0])
    np.testing.assert_array_equal(run_ours(w0, 0.1, 1e-8, 5, 0.0, 5), w0)


def test_weight_decay_equals_an_explicit_gaussian_prior_term():
    """Prior N(0, s^2 I) scaled by 1/N: loss - (1/N) log p(W) has gradient g + W / (N s^2)."""
    g = torch.Generator().manual_seed(0)
    w_a = torch.nn.Parameter(torch.randn(5, 4, generator=g, dtype=torch.float64))
    w_b = torch.nn.Parameter(w_a.detach().clone())
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    n, s = 1000.0, 1.0
    opt_a = Adagrad([w_a], lr=0.05, weight_decay=1 / (n * s * s))
    opt_b = Adagrad([w_b], lr=0.05)
    for _ in range(10):
        for w, opt, prior in [(w_a, opt_a, False), (w_b, opt_b, True)]:
            w.grad = None
            loss = torch.tanh(x @ w.T).pow(2).mean()
            if prior:
                log_prior = torch.distributions.Normal(0.0, s).log_prob(w).sum()
                loss = loss - log_prior / n
            loss.backward()
            opt.step()
    torch.testing.assert_close(w_a, w_b, rtol=1e-12, atol=1e-12)


def test_state_round_trips_through_state_dict():
    w = torch.nn.Parameter(torch.ones(3))
    opt = Adagrad([w], lr=0.1, warmup=1)
    for _ in range(3):
        w.grad = torch.full((3,), 0.5)
        opt.step()
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = Adagrad([w2], lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["step"] == 3 and opt2.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(opt2.state[w2]["sum"], torch.full((3,), 0.75))
