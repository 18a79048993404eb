"""The drifting objective ("Generative Modeling via Drifting", Deng, Li, Li, Du, He; arXiv 2602.04770).

Given generated features ``x_i`` (N of them), positives ``y+_j`` (real, M of them) and negatives
``y-_j`` (generated; by default the same batch with self-pairs masked), a drift field ``V(x_i)``
attracts each generated feature toward nearby real ones and repels it from nearby generated ones;
``V = 0`` when the two distributions agree. For one feature set and one temperature ``tau``
(numbers as in ``shared/design/METHOD.md``, "The drifting objective"):

1. normalise features so the mean pairwise distance is about ``sqrt(C)`` (scale detached);
2. logits ``-||x_i - y|| / tau`` against all positives and negatives (self-distance masked);
3. affinities ``A = sqrt(softmax_over_targets * softmax_over_samples)``;
4. weights ``W+ = A+ * sum_j A-``, ``W- = A- * sum_j A+`` (row sums), ``V = W+ y+ - W- y-``;
5. loss ``||x - stopgrad(x + V)||^2``, summed over temperatures (0.02, 0.05, 0.2) and feature
   sets, each drift normalised to unit mean norm (root-mean-square per dimension:
   ``mean_i ||V_i||^2 = C``, the same scale convention as step 1).

Feature sets are shaped ``(N, L, C)``: ``L`` independent locations (tokens, slice positions)
each holding a C-dim feature; the drift is computed per location, across the batch.
``(N, C)`` is read as ``L = 1``.

Temperatures are in units of the mean distance: after step 1 the logits use the effective
temperature ``tau * sqrt(C)`` (as in the drifting paper), so ``-||x - y|| / (tau sqrt(C))`` is
about ``-1 / tau`` for a typical pair whatever the feature dimension. With the literal
``-||x - y|| / tau`` a 400-dim feature set gives logits near -1000 at tau = 0.02, every
affinity underflows and the low temperatures contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_TEMPERATURES: tuple[float, ...] = (0.02, 0.05, 0.2)
_MASK = 1e6  # added to self-distances: exp(-1e6 / tau) == 0 in float32
_EPS = 1e-8


def _as_nlc(t: Tensor, name: str) -> Tensor:
    if t.dim() == 2:
        return t.unsqueeze(1)
    if t.dim() != 3:
        raise ValueError(f"{name} must be (N, C) or (N, L, C), got shape {tuple(t.shape)}")
    return t


def feature_scale(x: Tensor, pos: Tensor, neg: Tensor | None = None) -> Tensor:
    """Per-location scale S so that ``mean ||x/S - y/S|| ~ sqrt(C)`` (step 1, detached).

    Args:
        x: (L, N, C) generated features.
        pos: (L, M, C) positives.
        neg: (L, K, C) negatives, or None.

    Returns:
        (L, 1, 1) positive scale, no gradient.
    """
    with torch.no_grad():
        targets = pos if neg is None else torch.cat([pos, neg], dim=1)
        dist = torch.cdist(x.float(), targets.float())  # (L, N, M[+K])
        mean = dist.mean(dim=(1, 2), keepdim=True)
        return (mean / x.shape[-1] ** 0.5).clamp_min(_EPS)


def drift_field(
    x: Tensor,
    pos: Tensor,
    neg: Tensor,
    temperature: float,
    mask_self: bool = True,
) -> Tensor:
    """Raw drift V(x) of steps 2-4 (no feature or drift normalisation, no gradient).

    Args:
        x: (L, N, C) generated features.
        pos: (L, M, C) positives (real).
        neg: (L, K, C) negatives (generated). With `mask_self`, K == N and ``neg[:, i]`` is the
            negative copy of ``x[:, i]``, whose distance is masked.
        temperature: tau > 0, in units of the (normalised) feature distance.
        mask_self: mask the diagonal of the negative block.

    Returns:
        (L, N, C) drift, zero where attraction and repulsion balance.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.no_grad():
        x, pos, neg = x.float(), pos.float(), neg.float()
        n, m = x.shape[1], pos.shape[1]
        dist_pos = torch.cdist(x, pos)  # (L, N, M)
        dist_neg = torch.cdist(x, neg)  # (L, N, K)
        if mask_self:
            assert neg.shape[1] == n, "self-masking needs the negatives to be the generated set"
            dist_neg = dist_neg + _MASK * torch.eye(n, device=x.device, dtype=x.dtype)
        logits = -torch.cat([dist_pos, dist_neg], dim=2) / temperature  # (L, N, M + K)
        # Two-way normalisation (step 3): over targets (rows) and over samples (columns).
        a_row = logits.softmax(dim=2)
        a_col = logits.softmax(dim=1)
        affinity = (a_row * a_col).sqrt()
        a_pos, a_neg = affinity[..., :m], affinity[..., m:]
        # Step 4: each side weighted by the total mass of the other side.
        w_pos = a_pos * a_neg.sum(dim=2, keepdim=True)  # (L, N, M)
        w_neg = a_neg * a_pos.sum(dim=2, keepdim=True)  # (L, N, K)
        return w_pos @ pos - w_neg @ neg  # (L, N, C)


def drifting_loss(
    gen: Tensor,
    pos: Tensor,
    neg: Tensor | None = None,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
) -> Tensor:
    """Drifting loss of one feature set (steps 1-5), summed over temperatures.

    Gradients flow only into `gen`; `pos` and `neg` are treated as constants.

    Args:
        gen: (N, L, C) or (N, C) generated features (carry the generator's graph).
        pos: (M, L, C) or (M, C) real features.
        neg: (K, L, C) or (K, C) extra negatives. None (default) uses `gen` itself with
            self-pairs masked.
        temperatures: softmax temperatures, summed over.

    Returns:
        Scalar loss: for each temperature the mean squared drift per element (1 after drift
        normalisation, unless the drift vanishes), summed over temperatures. Its value is
        therefore constant; training progress shows in the gradient direction, and a two-sample
        distance should be used to monitor convergence.
    """
    x = _as_nlc(gen, "gen").transpose(0, 1)  # (L, N, C)
    y_pos = _as_nlc(pos, "pos").detach().transpose(0, 1)  # (L, M, C)
    if x.shape[0] != y_pos.shape[0] or x.shape[2] != y_pos.shape[2]:
        raise ValueError(f"gen {tuple(gen.shape)} and pos {tuple(pos.shape)} differ in (L, C)")
    mask_self = neg is None
    y_neg = x.detach() if neg is None else _as_nlc(neg, "neg").detach().transpose(0, 1)
    if not mask_self and (y_neg.shape[0] != x.shape[0] or y_neg.shape[2] != x.shape[2]):
        raise ValueError(f"gen {tuple(gen.shape)} and neg {tuple(neg.shape)} differ in (L, C)")

    scale = feature_scale(x, y_pos, None if mask_self else y_neg)  # (L, 1, 1)
    x_n = x.float() / scale
    pos_n, neg_n = y_pos.float() / scale, y_neg.float() / scale
    dim = x.shape[-1]
    total = x_n.new_zeros(())
    for tau in temperatures:
        v = drift_field(x_n, pos_n, neg_n, tau * dim**0.5, mask_self=mask_self)
        # Drift normalisation: sqrt(mean_i ||V_i||^2 / C) = 1 per location.
        norm = (v.pow(2).sum(dim=-1).mean(dim=1, keepdim=True).unsqueeze(-1) / dim).sqrt()
        v = v / norm.clamp_min(_EPS)
        target = (x_n + v).detach()
        total = total + ((x_n - target) ** 2).mean()
    return total


def energy_distance(gen: Tensor, pos: Tensor) -> Tensor:
    """Two-sample energy distance between feature sets, for monitoring (no gradient).

    The drifting loss has a constant value (its drift is normalised), so progress is watched
    with a distance instead: ``2 E||x - y|| - E||x - x'|| - E||y - y'||`` after the same
    scale normalisation as step 1, averaged over locations.

    Args:
        gen: (N, L, C) or (N, C).
        pos: (M, L, C) or (M, C).

    Returns:
        Scalar tensor >= ~0 (0 when the two sets share a distribution).
    """
    with torch.no_grad():
        x = _as_nlc(gen, "gen").transpose(0, 1).float()
        y = _as_nlc(pos, "pos").transpose(0, 1).float()
        scale = feature_scale(x, y)
        x, y = x / scale, y / scale
        d = 2 * torch.cdist(x, y).mean((1, 2)) - torch.cdist(x, x).mean((1, 2))
        return (d - torch.cdist(y, y).mean((1, 2))).mean()


def drifting_loss_sets(
    gen_sets: dict[str, Tensor],
    pos_sets: dict[str, Tensor],
    weights: dict[str, float] | None = None,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of `drifting_loss` over named feature sets (step 5, "summed over sets").

    Args:
        gen_sets: name -> (N, L, C) generated features.
        pos_sets: name -> (M, L, C) real features (same names).
        weights: name -> weight (default 1).
        temperatures: as in `drifting_loss`.

    Returns:
        (total loss, {name: energy distance}) with `energy_distance` per set for logging.
    """
    weights = weights or {}
    total: Tensor | None = None
    parts: dict[str, float] = {}
    for name, g in gen_sets.items():
        loss = drifting_loss(g, pos_sets[name], temperatures=temperatures)
        parts[name] = float(energy_distance(g, pos_sets[name]))
        term = weights.get(name, 1.0) * loss
        total = term if total is None else total + term
    assert total is not None, "no feature sets given"
    return total, parts
