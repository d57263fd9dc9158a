"""log p(x) = log ∫ p(x|z) p(z) dz by quadrature, for a latent space small enough to grid (Nz ≤ 3): the value
that App. D's estimator (Figure 3, Nz = 3) and importance sampling estimate, computed without sampling.

Per datapoint, Newton's method with Levenberg-Marquardt damping finds a mode of the posterior from a start
(the encoder's mean), and the grid is laid in the coordinates that whiten its Laplace approximation,
z = mode + L u with L Lᵀ = (-∇²_z log p(x, z))⁻¹. Along each axis u = sinh(t), with t on the midpoint rule over
[-asinh(radius), asinh(radius)]: nodes as dense as ``spacing`` at the mode and sparser in the tails, so that the
box reaches far (radius 48 standard deviations of the Laplace fit by default) for posteriors much wider than
their curvature at the mode, at the cost of a few dozen nodes per axis:

    log p(x) ≈ logsumexp_t [log p(x, z(u(t))) + Σ_i log (h cosh t_i)] + log |det L|,   h the step in t.

The rule converges geometrically for a smooth integrand that has vanished at the box's faces; ``edge`` says how
far it has vanished there. Mass in a second mode outside the box is not counted.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch

from vae.models.hmc import posterior_log_joint
from vae.models.nets import Decoder


class Laplace(NamedTuple):
    """Per datapoint: a posterior mode (n, Nz), a square root L of the Laplace covariance (n, Nz, Nz;
    L Lᵀ = (-∇² log p(x, z))⁻¹, upper triangular), and whether Newton's method converged there."""

    mode: torch.Tensor
    scale: torch.Tensor
    converged: torch.Tensor

    def take(self, index: torch.Tensor) -> Laplace:
        """The fit of the datapoints ``index`` selects."""
        return Laplace(self.mode[index], self.scale[index], self.converged[index])


class Quadrature(NamedTuple):
    """Per datapoint: log p(x) (n,), the largest log-integrand on the box's outer faces minus the largest
    overall (n,; below about -30 the box holds the mass), and the Laplace fit the grid was laid on."""

    log_px: torch.Tensor
    edge: torch.Tensor
    laplace: Laplace


def _gradient_and_hessian(decoder: Decoder, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """log p(x, z) (n,), its gradient (n, Nz) and Hessian (n, Nz, Nz) in z, one datapoint per row."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        value = posterior_log_joint(decoder, x)(z)
        (grad,) = torch.autograd.grad(value.sum(), z, create_graph=True)
        rows = [torch.autograd.grad(grad[:, i].sum(), z, retain_graph=True)[0] for i in range(z.shape[1])]
    return value.detach(), grad.detach(), torch.stack(rows, 1).detach()


def laplace_fit(decoder: Decoder, x: torch.Tensor, start: torch.Tensor, steps: int = 100) -> Laplace:
    """The posterior mode that damped Newton ascent reaches from ``start`` (n, Nz), in float64, and the square
    root of the inverse negative Hessian there. Converged: the Newton decrement gᵀ(-H)⁻¹g (twice the
    log-density a full Newton step would still gain) is below 1e-8 nats."""
    decoder = copy.deepcopy(decoder).double().requires_grad_(False)
    x, z = x.double(), start.double().clone()
    n, nz = z.shape
    eye = torch.eye(nz, dtype=torch.float64)
    damping = torch.full((n,), 1e-3, dtype=torch.float64)
    value, grad, hess = _gradient_and_hessian(decoder, x, z)
    for _ in range(steps):
        level = (-hess).diagonal(dim1=1, dim2=2).abs().mean(1) + 1.0
        chol, info = torch.linalg.cholesky_ex(-hess + (damping * level)[:, None, None] * eye)
        step = torch.cholesky_solve(grad[:, :, None], chol)[:, :, 0]
        step = torch.where((info == 0)[:, None], step, grad / level[:, None])
        new_value, new_grad, new_hess = _gradient_and_hessian(decoder, x, z + step)
        better = new_value >= value
        z = torch.where(better[:, None], z + step, z)
        value = torch.where(better, new_value, value)
        grad = torch.where(better[:, None], new_grad, grad)
        hess = torch.where(better[:, None, None], new_hess, hess)
        damping = torch.where(better, (damping / 10).clamp(min=1e-12), damping * 10)
    chol, info = torch.linalg.cholesky_ex(-hess)
    decrement = (torch.cholesky_solve(grad[:, :, None], chol)[:, :, 0] * grad).sum(1)
    scale = torch.linalg.solve_triangular(chol, eye.expand(n, nz, nz), upper=False).mT
    return Laplace(z, scale, (info == 0) & (decrement < 1e-8))


def grid_nodes(nz: int, radius: float, spacing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nodes u (K, Nz) of the sinh-spaced midpoint rule on [-radius, radius]^Nz, their log-weights (K,), and which
    lie on the outer faces (K,)."""
    reach = math.asinh(radius)
    points = 2 * math.ceil(reach / spacing)
    h = 2 * reach / points
    t = -reach + h * (torch.arange(points, dtype=torch.float64) + 0.5)
    u = torch.cartesian_prod(*[torch.sinh(t)] * nz).reshape(-1, nz)
    log_w = torch.cartesian_prod(*[torch.cosh(t).log() + math.log(h)] * nz).reshape(-1, nz).sum(1)
    face = (u.abs() == torch.sinh(t[-1])).any(1)
    return u, log_w, face


@torch.no_grad()
def log_marginal_quadrature(
    x: torch.Tensor,
    decoder: Decoder,
    laplace: Laplace,
    radius: float = 48.0,
    spacing: float = 0.25,
    chunk: int = 65536,
) -> Quadrature:
    """log p(x) for each row of x (n, D) on the grid whitened by ``laplace``, reaching ``radius`` standard
    deviations with nodes ``spacing`` apart at the mode; returns ``Quadrature``. The decoder runs in x's dtype
    on ``chunk`` (node, datapoint) pairs at a time, so memory is chunk * D values whatever n; sums are taken in
    float64. A grid of Nz > 3 is refused (ValueError): it would need tens of millions of nodes per datapoint."""
    nz = laplace.mode.shape[1]
    if nz > 3:
        raise ValueError(f"quadrature grids Nz <= 3, got Nz = {nz}")
    u, log_w, face = grid_nodes(nz, radius, spacing)
    log_det = laplace.scale.diagonal(dim1=1, dim2=2).log().sum(1)
    joint = posterior_log_joint(decoder, x)
    parts = []
    face_max = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    overall = face_max.clone()
    step = max(1, chunk // x.shape[0])
    for start in range(0, u.shape[0], step):
        block = u[start : start + step]
        z = laplace.mode + torch.einsum("nij,kj->kni", laplace.scale, block)
        values = joint(z.to(x.dtype)).double()
        parts.append(torch.logsumexp(values + log_w[start : start + step, None], 0))
        on_face = face[start : start + step]
        if on_face.any():
            face_max = torch.maximum(face_max, values[on_face].max(0).values)
        overall = torch.maximum(overall, values.max(0).values)
    log_px = torch.logsumexp(torch.stack(parts), 0) + log_det
    return Quadrature(log_px, face_max - overall, laplace)
