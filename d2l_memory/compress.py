"""Compress an adapter to a fixed rank: the best low-rank approximation of its summed delta.

Concatenating memories adds their ranks: five rank-8 memories are a rank-40 adapter, and a
100-chunk document internalized at rank 8 per chunk is rank 800. Serving stacks cap the rank
(vLLM's ``max_lora_rank``) and every rank row costs compute per token, so :func:`compress`
replaces each module's factors by the rank-``k`` pair closest to the combined delta in
Frobenius norm (Eckart-Young: the truncated SVD), and :func:`relative_error` says what that cost.

Neither ever forms a ``d_out x d_in`` delta. With ``B [d_out, r]`` and ``A [r, d_in]``, reduced
QR gives ``B = Q_B R_B`` and ``A^T = Q_A R_A`` with orthonormal columns in ``Q_B``/``Q_A``, so

    B @ A = Q_B (R_B R_A^T) Q_A^T.

The core ``R_B R_A^T`` is at most ``r x r``; its SVD ``U S V^T`` gives the SVD of the whole delta
(``Q_B U``, ``S``, ``Q_A V``), because multiplying by matrices with orthonormal columns changes
neither singular values nor Frobenius norms. Cost: ``O((d_out + d_in) r^2 + r^3)`` instead of
``O(d_out d_in r)`` time and ``d_out d_in`` memory for the full delta.
"""

from __future__ import annotations

import math

import torch

from d2l_memory.adapter import LoRAAdapter, LoRAWeights, ModuleKey
from d2l_memory.errors import AdapterError


def compress(adapter: LoRAAdapter, rank: int, *, name: str | None = None) -> LoRAAdapter:
    """The adapter whose every module is the best rank-``rank`` approximation of ``adapter``'s delta.

    Modules already at rank ``<= rank`` keep their factors exactly. The result is one part
    (the sum can no longer be split back into its members), called ``name``, or the input's part
    name when it has a single part, or ``"compressed"``. Compressed factors follow the library's
    scale convention: ``A`` has orthonormal rows and ``B`` carries the singular values.
    """
    if rank < 1:
        raise AdapterError(f"the target rank must be at least 1, got {rank}")
    if name is None:
        name = adapter.part_names[0] if len(adapter.parts) == 1 else "compressed"
    weights = {key: w if w.rank <= rank else _truncate(w, rank) for key, w in adapter.weights.items()}
    return LoRAAdapter.single(name, weights)


def relative_error(original: LoRAAdapter, compressed: LoRAAdapter) -> float:
    """``||delta_orig - delta_comp||_F / ||delta_orig||_F`` over all modules together.

    A module missing from one adapter counts as a zero delta there. Returns 0 when both are zero
    everywhere and ``inf`` when only the original is.
    """
    error_sq = reference_sq = 0.0
    for key, ours in original.weights.items():
        reference_sq += _norm_sq(ours)
        theirs = compressed.weights.get(key)
        error_sq += _norm_sq(ours if theirs is None else _difference(key, ours, theirs))
    for key in compressed.weights.keys() - original.weights.keys():  # deltas the original lacks
        error_sq += _norm_sq(compressed.weights[key])
    if reference_sq == 0.0:
        return 0.0 if error_sq == 0.0 else math.inf
    return math.sqrt(error_sq / reference_sq)


def _difference(key: ModuleKey, ours: LoRAWeights, theirs: LoRAWeights) -> LoRAWeights:
    """Factors of ``delta_ours - delta_theirs``: ``[B_o, -B_t] @ [A_o; A_t]``, still low rank."""
    if ours.A.shape[1] != theirs.A.shape[1] or ours.B.shape[0] != theirs.B.shape[0]:
        raise AdapterError(f"{key}: the adapters map different shapes and cannot be compared")
    return LoRAWeights(
        torch.cat([ours.A, theirs.A.to(ours.A)]),  # [r_o + r_t, d_in]
        torch.cat([ours.B, -theirs.B.to(ours.B)], dim=1),  # [d_out, r_o + r_t]
    )


def _factorize(w: LoRAWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``B @ A = Q_B @ core @ Q_A^T`` with orthonormal-column ``Q_B``, ``Q_A`` (see module docstring).

    Computed in at least float32: QR and SVD are not implemented for half precision.
    """
    dtype = torch.promote_types(w.A.dtype, torch.float32)
    Q_B, R_B = torch.linalg.qr(w.B.to(dtype))  # [d_out, p], [p, r] with p = min(d_out, r)
    Q_A, R_A = torch.linalg.qr(w.A.T.to(dtype))  # [d_in, q], [q, r] with q = min(d_in, r)
    return Q_B, R_B @ R_A.T, Q_A  # core [p, q]


def _truncate(w: LoRAWeights, rank: int) -> LoRAWeights:
    Q_B, core, Q_A = _factorize(w)
    U, S, Vh = torch.linalg.svd(core, full_matrices=False)  # [p, m], [m], [m, q]
    keep = min(rank, S.shape[0])
    A = Vh[:keep] @ Q_A.T  # [keep, d_in], orthonormal rows
    B = (Q_B @ U[:, :keep]) * S[:keep]  # [d_out, keep], columns scaled by the singular values
    return LoRAWeights(A.to(w.A.dtype).contiguous(), B.to(w.B.dtype).contiguous())


def _norm_sq(w: LoRAWeights) -> float:
    """``||B @ A||_F^2``, from the small core: orthonormal factors preserve the norm."""
    return float(torch.linalg.matrix_norm(_factorize(w)[1]) ** 2)
