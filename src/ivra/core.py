"""Pure tensor math of IVRA. Imports only torch: no hooks, no models.

Shapes: ``keys`` (B, N, Dk) patch features of one image block each, ``tokens`` (B, N, D) the visual tokens the
language model sees for those images, ``A`` (B, N, N) the patch affinity. All math runs in float32 and the result
is cast back to the tokens' dtype.

Row-normalisation rule (``affinity_mode``):

* ``cosine`` - the authors' rule: W = A / rowsum(A) with raw cosine A (negatives kept). A cosine row can sum to
  <= 0 (or to a tiny positive number), which would blow the token up or flip its sign. Rows whose sum is below
  ``COSINE_ROW_FLOOR`` = 1.0 (the row's own self-affinity: the negative affinities outweigh the positive ones)
  fall back to the ``relu`` rule for that row. Above the floor every |W_ij| <= |A_ij| / 1 <= 1, so nothing
  blows up. The number of such rows is reported by :func:`row_weights`.
* ``cosine_authors`` - UNSAFE, off by default, for reproducing the released FLOWER integration's numbers only:
  W = A / clamp(rowsum(A), min=1e-6) with raw cosine A, no fallback and no identity rows. A row whose sum is
  <= 0 is divided by 1e-6: its token is multiplied by up to ~1e6 and its sign may flip (on random weights the
  authors' rule hit 20 of 100 rows). Never use it for results of your own; ``cosine`` is the same rule with the
  fallback above.
* ``relu`` - negatives clipped to zero, then W = A+ / rowsum(A+).
* ``softmax`` - W = softmax(A / temperature) per row.

A row with no usable weight at all (e.g. an all-zero key, whose normalised vector is zero) becomes the identity
row: that token is left unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ivra.config import AFFINITY_MODES  # (defined there so that the config imports no torch)

COSINE_ROW_FLOOR = 1.0
_EPS = 1e-6


def affinity(keys: torch.Tensor) -> torch.Tensor:
    """Cosine affinity between patches: L2-normalise the keys, A = K K^T. (B, N, Dk) -> (B, N, N), float32."""
    if keys.dim() == 2:
        keys = keys.unsqueeze(0)
    if keys.dim() != 3:
        raise ValueError(f"affinity expects keys of shape (B, N, Dk) or (N, Dk), got {tuple(keys.shape)}")
    k = F.normalize(keys.float(), dim=-1, eps=_EPS)
    return k @ k.transpose(-1, -2)


def row_weights(A: torch.Tensor, mode: str = "cosine", temperature: float = 0.1) -> tuple[torch.Tensor, int]:
    """Turn an affinity (B, N, N) into row-stochastic-like pooling weights W (float32).

    Returns ``(W, n_fallback_rows)`` where ``n_fallback_rows`` counts rows that did not follow ``mode``'s main rule
    (cosine rows below the floor, or rows with no usable weight). See the module docstring for the rule.
    """
    if mode not in AFFINITY_MODES:
        raise ValueError(f"affinity_mode must be one of {AFFINITY_MODES}, got {mode!r}")
    A = A.float()
    if mode == "cosine_authors":  # UNSAFE (module docstring): the released integration's rule, no fallback
        return A / A.sum(-1, keepdim=True).clamp(min=_EPS), 0
    if mode == "softmax":
        if not temperature > 0:
            raise ValueError(f"softmax temperature must be > 0, got {temperature!r}")
        return torch.softmax(A / temperature, dim=-1), 0

    relu = A.clamp(min=0)
    relu_sum = relu.sum(-1, keepdim=True)
    if mode == "relu":
        W, s, n_fallback = relu, relu_sum, 0
    else:
        s = A.sum(-1, keepdim=True)
        low = s < COSINE_ROW_FLOOR
        W = torch.where(low, relu, A)
        s = torch.where(low, relu_sum, s)
        n_fallback = int(low.sum())
    dead = s <= _EPS
    if bool(dead.any()):
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
        W = torch.where(dead, eye, W)
        s = torch.where(dead, torch.ones_like(s), s)
        n_fallback += int(dead.sum()) if mode == "relu" else 0
    return W / s, n_fallback


def mix(tokens: torch.Tensor, W: torch.Tensor, lam: float) -> torch.Tensor:
    """(1 - lam) * v_i + lam * sum_j W_ij v_j, computed in float32, returned in the tokens' dtype."""
    v = tokens.float()
    out = (1.0 - lam) * v + lam * torch.matmul(W.to(v.dtype), v)
    return out.to(tokens.dtype)


def pool_visual_tokens(
    tokens: torch.Tensor,
    A: torch.Tensor,
    lam: float,
    mode: str = "cosine",
    temperature: float = 0.1,
) -> torch.Tensor:
    """IVRA's affinity-guided pooling and mixing of the visual tokens of one image block.

    ``tokens`` (B, N, D) or (N, D); ``A`` (B, N, N) or (N, N) from :func:`affinity`; ``lam`` in [0, 1].
    Returns (1 - lam) * v_i + lam * sum_j A_ij v_j / sum_j A_ij with the row rule of ``mode``.
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    squeeze = tokens.dim() == 2
    if squeeze:
        tokens = tokens.unsqueeze(0)
    if A.dim() == 2:
        A = A.unsqueeze(0)
    if tokens.dim() != 3 or A.dim() != 3 or A.shape[-1] != A.shape[-2] or A.shape[-1] != tokens.shape[-2]:
        raise ValueError(
            f"token count mismatch: tokens {tuple(tokens.shape)} need an affinity of shape (B, N, N) with "
            f"N = {tokens.shape[-2]}, got {tuple(A.shape)}"
        )
    W, _ = row_weights(A, mode, temperature)
    out = mix(tokens, W, lam)
    return out.squeeze(0) if squeeze else out


def group_mean(keys: torch.Tensor, group: int) -> torch.Tensor:
    """Average each run of ``group`` consecutive features: (..., N*group, D) -> (..., N, D).

    Used where several patches merge into one language-model token (2x2 merges, pixel shuffle) once the adapter
    has put the patches of one token next to each other.
    """
    if group == 1:
        return keys
    *lead, n, d = keys.shape
    if n % group:
        raise ValueError(f"cannot merge {n} patches in groups of {group}")
    return keys.reshape(*lead, n // group, group, d).mean(-2)
