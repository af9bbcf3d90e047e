"""The causal sequence encoder shared by SASRec and kgrec's transformer user encoder."""

from __future__ import annotations

import pytest
import torch

from kgrec.errors import ConfigError
from kgrec.models.sasrec import SASRec
from kgrec.models.sequence import (
    GAP_BUCKETS,
    CausalEncoder,
    SequenceUserEncoder,
    attention_mask,
    event_tokens,
    gap_tokens,
    trim_padding,
)

EVENT_WEIGHT = torch.tensor([1.0, 2.0, 3.0, 5.0, 4.0])  # view, click, cart, purchase, rating (ingest defaults)


def test_event_tokens_name_the_event_type_of_each_weight():
    weight = torch.tensor([[0.0, 1.0, 5.0, 4.0, 2.5]])
    # padding → 0, view → 1, purchase → 4, rating → 5, a weight no type has → 0
    assert event_tokens(weight, EVENT_WEIGHT).tolist() == [[0, 1, 4, 5, 0]]


def test_event_tokens_take_the_first_type_when_types_share_a_weight():
    assert event_tokens(torch.tensor([[1.0]]), torch.tensor([2.0, 1.0, 1.0])).tolist() == [[2]]


def test_gap_tokens_bucket_the_hours_since_the_previous_event():
    hour, day = 3600, 86400
    timestamp = torch.tensor([[0, 1000, 1000, 1000 + hour, 1000 + hour + day, 1000 + hour + day + 30 * day]])
    present = torch.tensor([[False, True, True, True, True, True]])
    # padding 0, the window's first event 1, then 2 + floor(log2(1 + hours)): 0 h, 1 h, 24 h, 720 h
    assert gap_tokens(timestamp, present).tolist() == [[0, 1, 2, 3, 6, 11]]
    ten_years = torch.tensor([[0, 10 * 365 * day]])
    assert gap_tokens(ten_years, torch.ones(1, 2, dtype=torch.bool)).tolist() == [[1, 2 + GAP_BUCKETS - 1]]


def test_attention_mask_is_causal_and_hides_padding_but_never_a_whole_row():
    present = torch.tensor([[False, True, True]])
    blocked = attention_mask(present, num_heads=1)[0]
    allowed = ~blocked
    assert allowed.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def test_trim_padding_drops_columns_that_are_padding_in_every_row():
    present = torch.tensor([[False, False, True, True], [False, False, False, True]])
    index = torch.arange(8).reshape(2, 4)
    kept_present, kept_index = trim_padding(present, index)
    assert kept_index.tolist() == [[2, 3], [6, 7]] and kept_present.shape == (2, 2)


def test_sasrec_hidden_state_ignores_later_events_and_padding():
    torch.manual_seed(0)
    model = SASRec(num_products=10, dim=8, max_length=4, dropout=0.0).eval()
    index = torch.tensor([[0, 3, 4, 5], [0, 3, 4, 9]])
    present = torch.tensor([[False, True, True, True], [False, True, True, True]])
    hidden = model(index, present)
    # Positions before the differing last event see the same inputs: same states.
    assert torch.allclose(hidden[0, :3], hidden[1, :3], atol=1e-6)
    assert not torch.allclose(hidden[0, 3], hidden[1, 3])
    # What a padded column holds does not matter.
    other = model(torch.tensor([[7, 3, 4, 5]]), present[:1])
    assert torch.allclose(other[0, 1:], hidden[0, 1:], atol=1e-6)
    assert torch.isfinite(model(index, torch.zeros_like(present))).all()  # an empty window: no NaN


def test_gated_encoder_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    encoder = CausalEncoder(8, 4, dropout=0.0, block="gated").eval()
    inputs = torch.randn(1, 4, 8).repeat(2, 1, 1)
    inputs[1, 3] = torch.randn(8)  # only the latest event differs
    present = torch.tensor([[False, True, True, True]] * 2)
    hidden = encoder(inputs, present)
    assert torch.allclose(hidden[0, :3], hidden[1, :3], atol=1e-6)
    assert not torch.allclose(hidden[0, 3], hidden[1, 3])
    padded = inputs[:1].clone()
    padded[0, 0] = 100.0  # what a padded column holds does not matter
    assert torch.allclose(encoder(padded, present[:1])[0, 1:], hidden[0, 1:], atol=1e-6)
    assert torch.isfinite(encoder(inputs, torch.zeros_like(present))).all()


def test_a_closed_gate_passes_the_input_through_the_gated_block():
    torch.manual_seed(0)
    encoder = CausalEncoder(8, 4, num_blocks=1, dropout=0.0, block="gated").eval()
    block = encoder.blocks[0]
    x = torch.randn(2, 4, 8)
    mask = attention_mask(torch.ones(2, 4, dtype=torch.bool), 1)
    assert not torch.allclose(block(x, mask), x, atol=1e-3)
    with torch.no_grad():
        for gate in (block.gate_attention, block.gate_feedforward):
            gate.weight.zero_()
            gate.bias.fill_(-30.0)  # sigmoid(-30) ~ 1e-13: nothing of either branch is added
    assert torch.allclose(block(x, mask), x, atol=1e-6)


def test_an_unknown_encoder_block_is_refused():
    with pytest.raises(ConfigError, match="Unknown encoder block 'post_ln'"):
        CausalEncoder(8, 4, block="post_ln")


@pytest.mark.parametrize("block", ["pre_ln", "gated"])
def test_sequence_user_encoder_reads_order_and_event_type(block):
    torch.manual_seed(0)
    encoder = SequenceUserEncoder(8, 4, EVENT_WEIGHT, dropout=0.0, block=block).eval()
    assert SequenceUserEncoder.block_of(encoder.state_dict()) == block
    products = torch.randn(6, 8)
    index = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 1, 2]])
    weight = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 5.0]])
    users = encoder.user_vectors(products, index, weight)
    assert users.shape == (3, 8)
    assert not torch.allclose(users[0], users[1])  # order matters (a mean would not see it)
    assert not torch.allclose(users[0], users[2])  # a purchase is not a view
    # user_vectors is the last hidden state of forward.
    assert torch.allclose(users, encoder(products, index, weight)[:, -1], atol=1e-6)


def test_time_gaps_change_the_user_only_when_the_encoder_reads_them():
    torch.manual_seed(0)
    products, index, weight = torch.randn(6, 8), torch.tensor([[1, 2], [1, 2]]), torch.ones(2, 2)
    timestamp = torch.tensor([[0, 60], [0, 60 * 86400]])  # the same products, a minute or 60 days apart
    timed = SequenceUserEncoder(8, 4, EVENT_WEIGHT, dropout=0.0, time_gaps=True).eval()
    users = timed.user_vectors(products, index, weight, timestamp)
    assert not torch.allclose(users[0], users[1])
    untimed = SequenceUserEncoder(8, 4, EVENT_WEIGHT, dropout=0.0).eval()
    users = untimed.user_vectors(products, index, weight, timestamp)
    assert torch.allclose(users[0], users[1])


def test_the_encoder_learns_a_next_product_that_only_the_time_gap_tells():
    """Planted: product 1 then product 2 is followed by product 3 when 2 came within the hour,
    by product 4 when it came weeks later. Without time gaps the two are indistinguishable."""

    def accuracy(time_gaps: bool) -> float:
        torch.manual_seed(0)
        encoder = SequenceUserEncoder(16, 2, EVENT_WEIGHT, dropout=0.0, time_gaps=time_gaps)
        products = torch.nn.Parameter(torch.randn(5, 16))
        optimizer = torch.optim.Adam([products, *encoder.parameters()], lr=0.02)
        index, weight = torch.tensor([[1, 2]]).repeat(64, 1), torch.ones(64, 2)
        late = torch.arange(64) % 2 == 1
        timestamp = torch.stack([torch.zeros(64, dtype=torch.long), torch.where(late, 30 * 86400, 600)], 1)
        target = torch.where(late, 4, 3)
        for _ in range(150):
            scores = encoder.user_vectors(products, index, weight, timestamp if time_gaps else None) @ products.T
            loss = torch.nn.functional.cross_entropy(scores, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            encoder.eval()
            scores = encoder.user_vectors(products, index, weight, timestamp if time_gaps else None) @ products.T
        return float((scores.argmax(1) == target).float().mean())

    assert accuracy(time_gaps=True) == 1.0
    assert accuracy(time_gaps=False) == 0.5
