"""The ensemble's vector space (member parts unit-length, cosine = mean of member cosines) and
its members' encoders run stacked for inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kgrec.models.ensemble import EncoderEnsemble, unit_members
from kgrec.models.sequence import SequenceUserEncoder


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


def members_and_events(block: str = "pre_ln", time_gaps: bool = False, dim: int = 16, seed: int = 0):
    """Two trained-looking members (random weights) and a batch of right-aligned windows:
    a row with padding, a row with a single event, and full rows; the events of three types, and
    some of a weight no type has (event token 0)."""
    torch.manual_seed(seed)
    event_weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    members = [SequenceUserEncoder(dim, 8, event_weight, time_gaps=time_gaps, block=block) for _ in range(2)]
    product_vectors = torch.randn(60, 2 * dim)
    index = torch.randint(0, 60, (6, 8))
    weight = torch.tensor([1.0, 2.0, 4.0, 2.5])[torch.randint(0, 4, (6, 8))]
    weight[0, :5] = 0
    weight[1, :-1] = 0
    timestamp = torch.cumsum(torch.randint(0, 400_000, (6, 8)), dim=1)
    return members, product_vectors, index, weight, timestamp


@pytest.mark.parametrize("time_gaps", [False, True])
def test_stacked_members_give_each_members_own_vectors(time_gaps: bool):
    members, product_vectors, index, weight, timestamp = members_and_events(time_gaps=time_gaps)
    ensemble = EncoderEnsemble(members).eval()
    times = timestamp if time_gaps else None
    with torch.no_grad():
        assert ensemble.stacked() is not None
        stacked = ensemble.user_vectors(product_vectors, index, weight, times)
        one_by_one = torch.cat(
            [m.user_vectors(c, index, weight, times) for m, c in zip(members, product_vectors.chunk(2, dim=-1))], dim=-1
        )
        in_chunks = ensemble.stacked().user_vectors(product_vectors, index, weight, times, chunk=4)
    assert torch.allclose(stacked, one_by_one, atol=1e-5)
    assert torch.allclose(in_chunks, one_by_one, atol=1e-5)


def test_stacked_members_follow_a_changed_weight_and_training_uses_the_members():
    members, product_vectors, index, weight, _ = members_and_events()
    ensemble = EncoderEnsemble(members).eval()
    with torch.no_grad():
        before = ensemble.user_vectors(product_vectors, index, weight)
        members[1].encoder.norm.bias.add_(1.0)  # a weight changed in place after the first call
        after = ensemble.user_vectors(product_vectors, index, weight)
        second = members[1].user_vectors(product_vectors[:, 16:], index, weight)
    assert torch.allclose(before[:, :16], after[:, :16]) and not torch.allclose(before[:, 16:], after[:, 16:])
    assert torch.allclose(after[:, 16:], second, atol=1e-5)
    # With gradients (training) the members run one by one, so gradients reach their weights.
    ensemble.user_vectors(product_vectors, index, weight).sum().backward()
    assert members[0].encoder.position.weight.grad is not None


def test_gated_members_are_not_stacked_and_still_give_their_vectors():
    members, product_vectors, index, weight, _ = members_and_events(block="gated")
    ensemble = EncoderEnsemble(members).eval()
    with torch.no_grad():
        assert ensemble.stacked() is None
        vectors = ensemble.user_vectors(product_vectors, index, weight)
        first = members[0].user_vectors(product_vectors[:, :16], index, weight)
    assert torch.allclose(vectors[:, :16], first)


@pytest.mark.parametrize("time_gaps", [False, True])
def test_one_member_runs_stacked_and_gives_the_modules_vectors(time_gaps: bool):
    # A single model's encoder is served as an ensemble of one: its numpy inference must give what
    # the torch module gives, on rows with padding, a lone event and full windows.
    members, product_vectors, index, weight, timestamp = members_and_events(time_gaps=time_gaps)
    single = members[0].eval()
    times = timestamp if time_gaps else None
    columns = product_vectors[:, :16]
    with torch.no_grad():
        one = EncoderEnsemble([single]).eval()
        assert one.stacked() is not None
        stacked = one.user_vectors(columns, index, weight, times)
        module = single.user_vectors(columns, index, weight, times)
    assert stacked.dtype == torch.float32 and stacked.shape == (6, 16)
    assert torch.allclose(stacked, module, atol=1e-5)
    assert not torch.allclose(stacked[0], stacked[2])  # rows differ: not one vector broadcast


def test_a_batch_above_the_stacked_rows_runs_the_members_one_by_one(monkeypatch):
    from kgrec.models import ensemble as ensemble_module

    members, product_vectors, index, weight, _ = members_and_events()
    ensemble = EncoderEnsemble(members).eval()
    with torch.no_grad():
        stacked = ensemble.user_vectors(product_vectors, index, weight)  # 6 rows: stacked
        monkeypatch.setattr(ensemble_module, "STACKED_MAX_ROWS", 4)
        monkeypatch.setattr(ensemble, "stacked", lambda: pytest.fail("a 6-row batch ran stacked"))
        one_by_one = ensemble.user_vectors(product_vectors, index, weight)
    assert torch.allclose(stacked, one_by_one, atol=1e-5)
