"""Text features: the content-hash cache, offline loading, product texts."""

from __future__ import annotations

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from kgrec.errors import ConfigError
from kgrec.features.config import FeaturesConfig
from kgrec.features.text import encode_texts, load_text_encoder, product_texts


class CountingEncoder:
    """A fake encoder: a text's vector is a hash of it; records every text it encodes."""

    model_id = "fake-model"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        self.calls.extend(texts)
        gen = [torch.Generator().manual_seed(abs(hash(t)) % 2**31) for t in texts]
        return F.normalize(torch.stack([torch.randn(8, generator=g) for g in gen]), dim=-1)


def test_encode_texts_cache_second_call_encodes_nothing(tmp_path):
    config = FeaturesConfig(cache_dir=str(tmp_path))
    encoder = CountingEncoder()
    first = encode_texts(["red lipstick", "blue pen", "stapler"], config, encoder=encoder)
    assert len(encoder.calls) == 3
    encoder.calls.clear()
    second = encode_texts(["red lipstick", "blue pen", "stapler"], config, encoder=encoder)
    assert encoder.calls == []
    assert torch.equal(first, second)


def test_encode_texts_cache_changed_text_encodes_one(tmp_path):
    config = FeaturesConfig(cache_dir=str(tmp_path))
    encoder = CountingEncoder()
    encode_texts(["red lipstick", "blue pen", "stapler"], config, encoder=encoder)
    encoder.calls.clear()
    out = encode_texts(["red lipstick", "black pen", "stapler"], config, encoder=encoder)
    assert encoder.calls == ["black pen"]
    assert out.shape == (3, 8)


def test_encode_texts_cache_persists_across_processes(tmp_path):
    config = FeaturesConfig(cache_dir=str(tmp_path))
    encode_texts(["a", "b"], config, encoder=CountingEncoder())
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    fresh = CountingEncoder()  # a new encoder object, as in a new run
    encode_texts(["b", "a"], config, encoder=fresh)
    assert fresh.calls == []


def test_encode_texts_cache_keyed_by_model(tmp_path):
    config = FeaturesConfig(cache_dir=str(tmp_path))
    encode_texts(["a"], config, encoder=CountingEncoder())
    other = CountingEncoder()
    other.model_id = "another-model"
    encode_texts(["a"], config, encoder=other)
    assert other.calls == ["a"]


def test_encode_texts_duplicates_encoded_once(tmp_path):
    encoder = CountingEncoder()
    out = encode_texts(["x", "x", "y"], FeaturesConfig(cache_dir=str(tmp_path)), encoder=encoder)
    assert sorted(encoder.calls) == ["x", "y"]
    assert torch.equal(out[0], out[1])


def test_load_text_encoder_bad_path_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_text_encoder(FeaturesConfig(text_model=str(tmp_path / "no-such-model")))
    with pytest.raises(ConfigError, match="all-MiniLM-L6-v2"):
        encode_texts(["a"], FeaturesConfig(text_model=str(tmp_path / "nope"), cache_dir=str(tmp_path)))


@pytest.mark.slow
def test_bundled_model_offline_gives_normalised_384d(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = FeaturesConfig(cache_dir=str(tmp_path), device="cpu")
    out = encode_texts(["red matte lipstick", "lipstick, red", "stainless steel stapler"], config, progress=False)
    assert out.shape == (3, 384)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-4)
    # Meaningful: the two lipsticks are closer to each other than to the stapler.
    assert out[0] @ out[1] > out[0] @ out[2]


def test_product_texts_joins_title_brand_categories_description():
    products = pl.DataFrame(
        {
            "product_id": ["p1", "p2"],
            "title": ["Gel Pen", None],
            "description": ["A smooth pen " + "x" * 500, None],
            "brand": ["Inkco", None],
            "categories": [["Office > Writing"], []],
        }
    )
    texts = product_texts(products, description_chars=20)
    assert texts[0] == "Gel Pen. Brand: Inkco. Category: Office > Writing. A smooth pen xxxxxxx"
    assert texts[1] == "p2"  # nothing known: the id keeps the text non-empty


def test_load_text_encoder_empty_folder_is_a_config_error_naming_the_path(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ConfigError) as error:
        load_text_encoder(FeaturesConfig(text_model=str(folder), device="cpu"))
    message = str(error.value)
    assert str(folder) in message and "sentence-transformers" in message and "empty" in message
    assert "features.text_model" in message and "all-MiniLM-L6-v2" in message


def test_load_text_encoder_folder_without_a_model_is_a_config_error_naming_the_path(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as error:
        load_text_encoder(FeaturesConfig(text_model=str(folder), device="cpu"))
    message = str(error.value)
    assert str(folder) in message and "cannot be loaded" in message and "features.text_model" in message
    assert isinstance(error.value.__cause__, Exception)  # the loader's own error stays attached


def test_load_text_encoder_file_instead_of_folder_is_a_config_error(tmp_path):
    file = tmp_path / "model.bin"
    file.write_bytes(b"\x00\x01")
    with pytest.raises(ConfigError, match=r"model\.bin is a file"):
        load_text_encoder(FeaturesConfig(text_model=str(file), device="cpu"))
