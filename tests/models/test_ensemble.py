"""The ensemble's vector space: member parts unit-length, cosine = mean of member cosines."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kgrec.models.ensemble import unit_members


def test_unit_members_makes_the_cosine_the_mean_of_the_members_cosines():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, 4, generator=gen), torch.randn(7, 3, 4, generator=gen)  # 3 members of 4-d
    joined_a, joined_b = unit_members(a.reshape(5, 12), 3), unit_members(b.reshape(7, 12), 3)
    assert torch.allclose(joined_a.norm(dim=-1), torch.ones(5))
    member_cosines = torch.einsum("umd,pmd->upm", F.normalize(a, dim=-1), F.normalize(b, dim=-1))
    assert torch.allclose(joined_a @ joined_b.T, member_cosines.mean(-1), atol=1e-6)


def test_one_member_is_plain_normalisation():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.allclose(unit_members(x, 1), F.normalize(x, dim=-1))


def test_no_rows_stay_no_rows():
    # A shop without categories has a [0, n·dim] category table.
    assert unit_members(torch.zeros(0, 12), 3).shape == (0, 12)
