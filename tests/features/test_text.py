"""Text features: the sharded content-hash cache, offline loading, precision, product texts."""

from __future__ import annotations

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from kgrec.errors import ConfigError
from kgrec.features.config import FeaturesConfig
import kgrec.features.text as text
from kgrec.features.text import TextCache, encode_texts, encoder_id, load_text_encoder, product_texts


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
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 1
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


def shard_files(cache_dir) -> dict[str, tuple[int, int]]:
    """Every shard of the cache: name -> (size, mtime in ns)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in cache_dir.glob("*/*.safetensors")}


def test_text_cache_adding_one_text_writes_one_small_shard_and_leaves_the_others(tmp_path):
    config = FeaturesConfig(cache_dir=str(tmp_path))
    catalog = [f"product {i}" for i in range(200)]
    encode_texts(catalog, config, encoder=CountingEncoder())
    before = shard_files(tmp_path)
    assert len(before) == 1

    encoder = CountingEncoder()
    out = encode_texts([*catalog, "a new product"], config, encoder=encoder)
    after = shard_files(tmp_path)
    assert encoder.calls == ["a new product"]
    assert {name: after[name] for name in before} == before  # untouched: same size and mtime
    (new,) = set(after) - set(before)
    assert after[new][0] < before[next(iter(before))][0] / 20  # one row, not the catalog again
    assert out.shape == (201, 8)


def test_text_cache_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("KGREC_HOME", str(tmp_path / "home"))
    encode_texts(["a", "b"], FeaturesConfig(), encoder=CountingEncoder())
    cache = tmp_path / "home" / "text-cache"
    (folder,) = cache.iterdir()
    (shard,) = folder.iterdir()
    assert [oct(p.stat().st_mode & 0o777) for p in (tmp_path / "home", cache, folder)] == ["0o700"] * 3
    assert oct(shard.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "garbage"])
def test_text_cache_corrupt_shard_is_encoded_again(tmp_path, damage):
    config = FeaturesConfig(cache_dir=str(tmp_path))
    first = encode_texts(["a", "b", "c"], config, encoder=CountingEncoder())
    encode_texts(["d"], config, encoder=CountingEncoder())
    shards = sorted(tmp_path.glob("*/*.safetensors"), key=lambda p: p.stat().st_size)
    damaged, intact = shards[1], shards[0]  # the three-row shard; "d" stays intact
    data = damaged.read_bytes()
    damaged.write_bytes({"truncate": data[: len(data) // 2],
                         "flip a byte": data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:],
                         "garbage": b"not a shard"}[damage])

    encoder = CountingEncoder()
    again = encode_texts(["a", "b", "c", "d"], config, encoder=encoder)
    assert sorted(encoder.calls) == ["a", "b", "c"]  # only the damaged shard's texts
    assert torch.equal(again[:3], first)
    # The rows are encoded again into a shard of the same bytes, and so the same name.
    assert damaged.read_bytes() == data and intact.exists()
    assert len(shard_files(tmp_path)) == 2
    fresh = CountingEncoder()
    encode_texts(["a", "b", "c", "d"], config, encoder=fresh)
    assert fresh.calls == []


def test_text_cache_corrupt_shard_is_removed_at_the_next_write(tmp_path):
    config = FeaturesConfig(cache_dir=str(tmp_path))
    encode_texts(["a", "b"], config, encoder=CountingEncoder())
    (damaged,) = tmp_path.glob("*/*.safetensors")
    damaged.write_bytes(damaged.read_bytes()[:-1])
    encode_texts(["c"], config, encoder=CountingEncoder())
    assert not damaged.exists() and len(shard_files(tmp_path)) == 1


def test_text_cache_merges_small_shards_beyond_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(TextCache, "MAX_SHARDS", 4)
    config = FeaturesConfig(cache_dir=str(tmp_path))
    encode_texts([f"big {i}" for i in range(50)], config, encoder=CountingEncoder())
    big = set(shard_files(tmp_path))
    for i in range(6):
        encode_texts([f"new {i}"], config, encoder=CountingEncoder())
        assert len(shard_files(tmp_path)) <= 4 + 1
    assert big <= set(shard_files(tmp_path))  # the large shard is never rewritten
    encoder = CountingEncoder()
    out = encode_texts([f"big {i}" for i in range(50)] + [f"new {i}" for i in range(6)], config, encoder=encoder)
    assert encoder.calls == [] and out.shape == (56, 8)


def test_text_cache_old_single_file_cache_is_ignored(tmp_path):
    (tmp_path / "0123456789abcdef.safetensors").write_bytes(b"an older kgrec's cache")
    encoder = CountingEncoder()
    encode_texts(["a"], FeaturesConfig(cache_dir=str(tmp_path)), encoder=encoder)
    assert encoder.calls == ["a"]
    assert (tmp_path / "0123456789abcdef.safetensors").exists()  # left as it was


def test_encode_texts_cache_keyed_by_precision_and_max_tokens(tmp_path, monkeypatch):
    """Without an encoder, the cache key comes from the config, before any model is loaded."""
    loaded: list[CountingEncoder] = []

    def load(config):
        encoder = CountingEncoder()
        encoder.model_id = encoder_id("fake", config)
        loaded.append(encoder)
        return encoder

    monkeypatch.setattr(text, "resolve_text_model", lambda name: (tmp_path, "fake"))
    monkeypatch.setattr(text, "load_text_encoder", load)
    settings = [dict(precision="fp32", max_tokens=None), dict(precision="int8", max_tokens=None),
                dict(precision="fp32", max_tokens=64), dict(precision="bf16", max_tokens=128)]
    for setting in settings:
        encode_texts(["a", "b"], FeaturesConfig(cache_dir=str(tmp_path / "cache"), **setting))
    assert [e.calls for e in loaded] == [["a", "b"]] * 4  # each setting encodes for itself
    for setting in settings:
        encode_texts(["a", "b"], FeaturesConfig(cache_dir=str(tmp_path / "cache"), **setting))
    assert len(loaded) == 4  # all cached now: no model loaded


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


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bundled_model_lower_precision_is_close_to_fp32(precision):
    texts = [
        "Gel Pen, Black, 12 Pack. Brand: Inkco. Category: Office > Writing. Smooth, quick-drying ink.",
        "Stainless Steel Stapler. Brand: Clipmate",
        "Red Matte Lipstick. Category: Beauty > Makeup > Lipstick. Long-wear, cruelty-free formula.",
        "Financial calculator with Reverse Polish Notation, programmable, 3 by 5 inches",
    ]
    reference = load_text_encoder(FeaturesConfig(device="cpu", precision="fp32", max_tokens=None)).encode(texts)
    encoder = load_text_encoder(FeaturesConfig(device="cpu", precision=precision))
    out = encoder.encode(texts)
    assert out.shape == (4, 384) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-4)
    assert (out * reference).sum(dim=1).min() > 0.95
    assert encoder.model_id == f"all-MiniLM-L6-v2|precision={precision}|max_tokens=64"


def test_load_text_encoder_int8_on_gpu_is_a_config_error():
    from kgrec.features.text import SentenceTransformerEncoder, resolve_text_model

    path, model_id = resolve_text_model("all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="int8.*CPU only"):
        SentenceTransformerEncoder(path, model_id, 8, "cuda", "int8")
