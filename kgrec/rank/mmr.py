"""Greedy MMR-style re-ranking, vectorised over a batch of users.

Pure tensor code, no I/O. :func:`mmr_select` is the engine under
:func:`kgrec.rank.engine.rank_rows`; it works on a *pool* of ``M`` candidates per user
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
    with_novelty = embeddings is not None and share < 1.0
    rows = torch.arange(b, device=base.device)
    explore_part = share * exploration
    # What does not change from pick to pick; a picked or empty slot is -inf from then on.
    fixed = torch.where(valid, base + gamma * explore_part, -torch.inf)
    # novelty = clamp(1 - max cos to the picks, 0, 1) = the least clamp(1 - cos) over the picks.
    novelty = torch.ones((b, m), dtype=base.dtype, device=base.device)
    novelty_weight = gamma * (1.0 - share)
    positions, best_scores, best_novelty = [], [], []
    for step in range(k):
        score = torch.add(fixed, novelty, alpha=novelty_weight) if with_novelty else fixed
        best = score.argmax(dim=1, keepdim=True)  # [b, 1]
        positions.append(best)
        best_scores.append(score.gather(1, best))
        if with_novelty:
            best_novelty.append(novelty.gather(1, best))
        fixed.scatter_(1, best, -torch.inf)
        if with_novelty and step + 1 < k:
            chosen = embeddings[rows, best[:, 0]]  # [b, dim]
            sim = torch.bmm(embeddings, chosen.unsqueeze(-1)).squeeze(-1)  # [b, M]
            novelty = torch.minimum(novelty, (1.0 - sim).clamp_(min=0.0))
    position = torch.cat(positions, dim=1)
    picked = torch.isfinite(torch.cat(best_scores, dim=1))  # -inf: the user ran out of candidates
    diversity = explore_part.gather(1, position)
    if with_novelty:
        diversity = diversity + (1.0 - share) * torch.cat(best_novelty, dim=1)
    return position, diversity, picked
