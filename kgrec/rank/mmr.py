"""Greedy MMR-style re-ranking, vectorised over a batch of users.

Pure tensor code, no I/O. :func:`mmr_select` is the engine under
:func:`kgrec.rank.scoring.rank_batch`; it works on a *pool* of ``M`` candidates per user
(the best ones by relevance, popularity and exploration) and picks ``k`` of them one
at a time.

At each step every remaining candidate ``i`` of a user gets

    div_i   = s·exploration_i + (1 - s)·novelty_i
    novelty_i = clamp(1 - max_{j picked} cos(e_i, e_j), 0, 1)     (1 before the first pick)
    score_i = base_i + γ·div_i

and the candidate with the highest ``score_i`` is picked, its ``div_i`` recorded. So
each pick's diversity part is exactly the one its score used, and
``score = base + γ·div`` holds for every picked item. Picking only lowers the novelty
of the others, so the picked scores never increase down the list.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def mmr_select(
    base: Tensor,
    exploration: Tensor,
    embeddings: Tensor | None,
    k: int,
    gamma: float,
    exploration_share: float,
    valid: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick ``k`` of ``M`` pool candidates per user, greedily, as described in the module docstring.

    Args:
        base: ``[b, M]`` float, ``α·relevance + β·popularity`` of each pool candidate.
        exploration: ``[b, M]`` float in ``[0, 1]``, the knowledge-graph exploration bonus.
        embeddings: ``[b, M, dim]`` L2-normalised embeddings of the pool candidates, or
            ``None``: then ``div = exploration`` (no novelty term).
        k: picks per user (``k <= M``).
        gamma: the diversity weight ``γ``.
        exploration_share: ``s`` in ``[0, 1]``.
        valid: ``[b, M]`` bool; ``False`` marks pool slots that hold no candidate.

    Returns:
        ``(position [b, k] long, diversity [b, k] float, picked [b, k] bool)``: the picks'
        positions in the pool, their diversity parts, and ``False`` where a user ran out
        of valid candidates (that slot's position and diversity mean nothing).
    """
    b, m = base.shape
    share = float(exploration_share) if embeddings is not None else 1.0
    available = valid.clone()
    max_sim = torch.full((b, m), -torch.inf, dtype=base.dtype, device=base.device)
    positions = torch.zeros((b, k), dtype=torch.long, device=base.device)
    diversity = torch.zeros((b, k), dtype=base.dtype, device=base.device)
    picked = torch.zeros((b, k), dtype=torch.bool, device=base.device)
    rows = torch.arange(b, device=base.device)
    explore_part = share * exploration
    for step in range(k):
        if embeddings is not None and share < 1.0:
            novelty = (1.0 - max_sim).clamp(0.0, 1.0)
            div = explore_part + (1.0 - share) * novelty
        else:
            div = explore_part
        score = (base + gamma * div).masked_fill(~available, -torch.inf)
        best = score.argmax(dim=1)
        positions[:, step] = best
        diversity[:, step] = div[rows, best]
        picked[:, step] = available[rows, best]
        available[rows, best] = False
        if embeddings is not None and share < 1.0 and step + 1 < k:
            chosen = embeddings[rows, best]  # [b, dim]
            sim = torch.bmm(embeddings, chosen.unsqueeze(-1)).squeeze(-1)  # [b, M]
            max_sim = torch.maximum(max_sim, sim)
    return positions, diversity, picked
