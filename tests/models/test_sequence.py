"""The causal sequence encoder shared by SASRec and kgrec's transformer user encoder."""

from __future__ import annotations

import torch

from kgrec.models.sasrec import SASRec
from kgrec.models.sequence import SequenceUserEncoder, attention_mask, event_tokens, trim_padding

EVENT_WEIGHT = torch.tensor([1.0, 2.0, 3.0, 5.0, 4.0])  # view, click, cart, purchase, rating (ingest defaults)


def test_event_tokens_name_the_event_type_of_each_weight():
    weight = torch.tensor([[0.0, 1.0, 5.0, 4.0, 2.5]])
    # padding → 0, view → 1, purchase → 4, rating → 5, a weight no type has → 0
    assert event_tokens(weight, EVENT_WEIGHT).tolist() == [[0, 1, 4, 5, 0]]


def test_event_tokens_take_the_first_type_when_types_share_a_weight():
    assert event_tokens(torch.tensor([[1.0]]), torch.tensor([2.0, 1.0, 1.0])).tolist() == [[2]]


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


def test_sequence_user_encoder_reads_order_and_event_type():
    torch.manual_seed(0)
    encoder = SequenceUserEncoder(8, 4, EVENT_WEIGHT, dropout=0.0).eval()
    products = torch.randn(6, 8)
    index = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 1, 2]])
    weight = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 5.0]])
    users = encoder.user_vectors(products, index, weight)
    assert users.shape == (3, 8)
    assert not torch.allclose(users[0], users[1])  # order matters (a mean would not see it)
    assert not torch.allclose(users[0], users[2])  # a purchase is not a view
    # user_vectors is the last hidden state of forward.
    assert torch.allclose(users, encoder(products, index, weight)[:, -1], atol=1e-6)
