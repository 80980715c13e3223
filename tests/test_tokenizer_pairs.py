"""Sentence pairs: [CLS] a [SEP] b [SEP], type ids 1 on b, longest-first truncation, as transformers.

Checked against tests/fixtures/pairs.safetensors (written by tests/make_pair_fixtures.py from
transformers' AutoTokenizer), so it runs without transformers; where transformers is installed, a
second test compares with it directly on more pairs.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from minadapt.errors import ConfigError
from minadapt.tokenizer import Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "pairs.safetensors"


@pytest.fixture(scope="module")
def fixture():
    from safetensors import safe_open

    with safe_open(str(FIXTURE), "np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return json.loads(meta["pairs"]), json.loads(meta["truncation"]), tensors


@pytest.fixture(scope="module")
def tok(checkpoint_dir):
    return Tokenizer(checkpoint_dir)


def test_pairs_equal_transformers_fixture(tok, fixture):
    pairs, _, tensors = fixture
    batch = tok.encode([a for a, _ in pairs], [b for _, b in pairs])
    assert np.array_equal(batch.input_ids, tensors["pairs.input_ids"])
    assert np.array_equal(batch.attention_mask, tensors["pairs.attention_mask"])
    assert np.array_equal(batch.token_type_ids, tensors["pairs.token_type_ids"])
    assert batch.token_type_ids.any()  # the fixture really has type-1 tokens


def test_pair_layout(tok):
    ids, types = tok.ids_and_types(["the cat"], ["a dog"])
    tokens = [tok.tk.id_to_token(int(i)) for i in ids[0]]
    assert tokens == ["[CLS]", "the", "cat", "[SEP]", "a", "dog", "[SEP]"]
    assert types[0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert tok.tokens("the cat", "a dog") == tokens


@pytest.mark.parametrize("case", range(7))
def test_truncation_equals_transformers_fixture(checkpoint_dir, fixture, case):
    _, cases, _ = fixture
    c = cases[case]
    tk = Tokenizer(checkpoint_dir, max_length=c["max_length"])
    ids, types = tk.ids_and_types([c["text"]], [c["pair"]])
    assert ids[0].tolist() == c["input_ids"]
    assert types[0].tolist() == c["token_type_ids"]
    assert len(ids[0]) == c["max_length"] or c["max_length"] == 9  # every case but one is cut to the limit
    assert tk.ids([c["text"]], [c["pair"]])[0].tolist() == c["input_ids"]


def test_single_texts_unchanged(tok):
    texts = ["a gripping, funny film", "dull"]
    ids, types = tok.ids_and_types(texts)
    assert [i.tolist() for i in ids] == [i.tolist() for i in tok.ids(texts)]
    assert all(not t.any() for t in types)
    batch = tok.encode(texts)
    assert batch.input_ids[0, 0] == 101 and not batch.token_type_ids.any()
    assert tok.encode("dull").input_ids.tolist() == tok.encode(["dull"]).input_ids.tolist()
    # the old call without types still pads
    assert np.array_equal(tok.pad(ids).input_ids, batch.input_ids)


def test_padding_has_type_zero(tok):
    batch = tok.encode(["short", "a much longer first text here"], ["b", "and a second one"])
    assert (batch.token_type_ids[batch.attention_mask == 0] == 0).all()
    assert batch.token_type_ids[0].tolist()[:5] == [0, 0, 0, 1, 1]


def test_pairs_must_match_texts(tok):
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        tok.encode(["a", "b"], ["c"])


def test_max_length_up_to_the_checkpoint(checkpoint_dir):
    long = "word " * 1000
    assert len(Tokenizer(checkpoint_dir, max_length=512).ids([long])[0]) == 512
    with pytest.raises(ConfigError, match="max_position_embeddings 512"):
        Tokenizer(checkpoint_dir, max_length=513)
    with pytest.raises(ConfigError, match=">= 3"):
        Tokenizer(checkpoint_dir, max_length=2)


def test_equals_transformers_directly(checkpoint_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(checkpoint_dir))
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on under mat tree quickly , . naïve café don't".split()
    for _ in range(40):
        a = " ".join(rng.choice(words, rng.integers(1, 30)))
        b = " ".join(rng.choice(words, rng.integers(1, 30)))
        max_length = int(rng.integers(3, 40))
        e = hf(a, b, truncation=True, max_length=max_length)
        ids, types = Tokenizer(checkpoint_dir, max_length=max_length).ids_and_types([a], [b])
        assert ids[0].tolist() == e["input_ids"], (a, b, max_length)
        assert types[0].tolist() == e["token_type_ids"], (a, b, max_length)


def test_encoder_on_pairs_matches_transformers(checkpoint_dir, fixture):
    """The whole path for pairs: our tokenizer's batch through minadapt's float64 encoder equals
    BertModel's last_hidden_state on the same pairs (segment embedding of type 1 included)."""
    import minadapt

    pairs, _, tensors = fixture
    batch = Tokenizer(checkpoint_dir).encode([a for a, _ in pairs], [b for _, b in pairs])
    model = minadapt.load_model(checkpoint_dir, dtype="float64")
    h = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    real = batch.attention_mask.astype(bool)
    assert np.abs(h - tensors["pairs.last_hidden_state"])[real].max() < 1e-9
    # the type ids matter: all zeros is far off
    h0 = model.encode(batch.input_ids, batch.attention_mask, np.zeros_like(batch.token_type_ids))
    assert np.abs(h0 - tensors["pairs.last_hidden_state"])[real].max() > 1e-2
