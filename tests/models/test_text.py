"""Text encoders: packaged MiniLM offline, scratch WordPiece tower, overflow policy, freezing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radlens.errors import ConfigError, InputError
from radlens.models.components import build
from radlens.models.text_tower import train_wordpiece


@pytest.fixture(scope="module")
def minilm():
    return build({"kind": "minilm", "context_length": 128}).eval()


def test_minilm_loads_offline_and_ranks_similar_sentences_closer(minilm, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [
        "An axial T2-weighted brain MRI.",
        "Axial T2 weighted MR image of the brain.",
        "The stock market fell sharply on Tuesday.",
    ]
    with torch.no_grad():
        emb = F.normalize(minilm(**minilm.tokenize(texts)), dim=-1)
    sim = emb @ emb.T
    assert minilm.width == 384 and minilm.pooling == "mean"
    assert sim[0, 1] > sim[0, 2] + 0.3


def test_text_longer_than_context_is_an_error_naming_its_length(minilm) -> None:
    long_text = " ".join(["echo"] * 200)
    with pytest.raises(InputError, match=r"text 1 has 202 tokens, more than the context length 128"):
        minilm.tokenize(["short", long_text])


def test_truncate_policy_cuts_counts_and_warns(captions: list[str]) -> None:
    enc = build({"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                   "context_length": 16, "on_overflow": "truncate"}, texts=captions)
    with pytest.warns(UserWarning, match="1 of 2 texts truncated to 16 tokens"):
        batch = enc.tokenize([captions[0], "axial"])
    assert batch["input_ids"].shape == (2, 16) and enc.truncated == 1
    assert batch["input_ids"][0, -1] == enc.tokenizer.sep_token_id


def test_scratch_wordpiece_learns_caption_words_and_never_emits_unk(captions: list[str]) -> None:
    tok = train_wordpiece(captions * 3, vocab_size=300)
    pieces = tok.convert_ids_to_tokens(tok("plane sagittal, zebra!")["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert "sagittal" in pieces  # a caption word is one token
    assert "[UNK]" not in pieces  # an unseen word splits into characters


def test_freeze_all_but_last_layers() -> None:
    enc = build({"kind": "scratch", "hidden_size": 32, "num_layers": 3, "num_heads": 2,
                   "trainable_layers": 1})
    layers = enc.model.encoder.layer
    assert all(not p.requires_grad for p in enc.model.embeddings.parameters())
    assert all(not p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[2].parameters())
    assert enc.model.pooler is None


@pytest.mark.parametrize("pooling", ["cls", "mean", "sentences"])
def test_pooling_ignores_padding(pooling: str, captions: list[str]) -> None:
    enc = build({"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                   "pooling": pooling}, texts=captions).eval()
    with torch.no_grad():
        alone = enc(**enc.tokenize(["axial brain"]))
        padded = enc(**enc.tokenize(["axial brain", captions[0]]))[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_sentence_pooling_averages_sentences_encoded_alone(captions: list[str]) -> None:
    texts = [*captions, "axial brain. coronal spine."]  # the tokenizer learns "." from its texts
    enc = build({"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                   "pooling": "sentences"}, texts=texts).eval()
    with torch.no_grad():
        out = enc(**enc.tokenize(["axial brain. coronal spine", "axial brain.", "coronal spine", ""]))
    assert torch.allclose(out[0], (out[1] + out[2]) / 2, atol=1e-5)
    assert not torch.allclose(out[1], out[2], atol=1e-3) and torch.isfinite(out[3]).all()


def test_bad_text_configs() -> None:
    with pytest.raises(ConfigError, match="path_or_id"):
        build({"kind": "pretrained"})
    with pytest.raises(ConfigError, match="on_overflow"):
        build({"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                 "on_overflow": "ignore"})
    with pytest.raises(InputError, match="cannot load a text encoder"):
        build({"kind": "pretrained", "path_or_id": "/nonexistent/bert"})


def test_any_bert_family_checkpoint_from_a_local_folder(minilm) -> None:
    from radlens.models.text_tower import minilm_path

    enc = build({"kind": "pretrained", "path_or_id": minilm_path(), "pooling": "mean"}).eval()
    batch = enc.tokenize(["axial flair"])
    with torch.no_grad():
        assert torch.allclose(enc(**batch), minilm(**minilm.tokenize(["axial flair"])), atol=1e-6)


def test_frozen_tower_runs_once_per_distinct_text_and_matches_uncached() -> None:
    encoder = build({"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                       "intermediate_size": 64, "vocab_size": 200, "context_length": 32},
                      texts=["axial t1", "sagittal t2 flair"])
    encoder.set_trainable_layers(0)
    calls = []
    encoder.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0]) if args else 1))
    batch = encoder.tokenize(["axial t1", "sagittal t2 flair", "axial t1"])
    first = encoder(**batch)
    again = encoder(**batch)
    encoder.model.eval()
    with torch.no_grad():
        direct = encoder._pool(**batch)
    assert torch.allclose(first, direct, atol=1e-6) and torch.equal(first, again)
    assert len(calls) == 2  # one pass for the two distinct texts, one for the direct check


def test_frozen_sentence_pooling_encodes_each_distinct_sentence_once(captions: list[str]) -> None:
    texts = [*captions, "axial brain. coronal spine."]
    enc = build({"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                   "pooling": "sentences"}, texts=texts)
    enc.set_trainable_layers(0)
    encoded: list[int] = []
    enc.model.register_forward_pre_hook(lambda module, args, kwargs: encoded.append(len(kwargs["input_ids"])),
                                        with_kwargs=True)
    first = enc(**enc.tokenize(["axial brain. coronal spine.", "coronal spine. axial brain."]))
    alone = enc(**enc.tokenize(["coronal spine.", "axial brain."]))
    assert encoded == [2]  # two distinct sentences, encoded once for both calls
    assert torch.allclose(first[0], first[1], atol=1e-6)
    assert torch.allclose(first[0], alone.mean(0), atol=1e-6)


def test_sentences_do_not_end_inside_numbers_or_abbreviations(minilm) -> None:
    from radlens.models.sentences import SentenceSplitter

    splitter = SentenceSplitter(minilm.tokenizer)
    text = "A 3.5 cm nodule in the right upper lobe. Approx. 2 mm, e.g. stable. A port. I see. No effusion"
    pieces = [minilm.tokenizer.decode(p) for p in splitter.pieces(splitter.body(minilm.tokenizer(text)["input_ids"]))]
    assert pieces == ["a 3. 5 cm nodule in the right upper lobe.", "approx. 2 mm, e. g. stable.", "a port.", "i see.",
                      "no effusion"]


def test_sentence_pooling_bounds_each_sentence_not_the_report(captions: list[str]) -> None:
    texts = [*captions, "axial brain. coronal spine."]
    spec = {"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "context_length": 8, "pooling": "sentences"}
    enc = build(spec, texts=texts)
    report = " ".join(["axial brain."] * 6)  # 18 tokens with [CLS]/[SEP], each sentence 5
    assert enc.tokenize([report])["input_ids"].shape[1] == 20
    with pytest.raises(InputError, match="longest sentence of text 0 has 11 tokens"):
        enc.tokenize(["axial brain coronal spine axial brain coronal spine."])
    cut = build({**spec, "on_overflow": "truncate"}, texts=texts)
    with pytest.warns(UserWarning, match="per sentence"):
        ids = cut.tokenize(["axial brain coronal spine axial brain coronal spine. axial brain."])["input_ids"]
    assert ids.shape[1] == 2 + 6 + 3  # the long sentence cut to 6 tokens, the short one kept


def test_sentence_pooling_needs_cls_and_sep(minilm) -> None:
    import copy

    from radlens.models.sentences import SentenceSplitter

    tokenizer = copy.deepcopy(minilm.tokenizer)  # the fixture is shared
    tokenizer.cls_token = None
    with pytest.raises(ConfigError, match="needs a tokenizer with"):
        SentenceSplitter(tokenizer)


# Per-token states and the bounded frozen-tower caches (issue #9). The towers are built here from a
# BertModel and a trained WordPiece, so these tests do not depend on how configs build towers.
TOKEN_TEXTS = ["axial brain. coronal spine.", "axial brain.", "coronal spine", "sagittal t2 flair of the spine.", ""]


def _tower(pooling: str = "mean", trainable: int | None = None, positions: int = 64, **cache):
    from transformers import BertConfig, BertModel

    from radlens.models.text import TextEncoder

    tokenizer = train_wordpiece([*TOKEN_TEXTS, "axial t1. coronal t2. sagittal flair."] * 2, vocab_size=300)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=positions)
    torch.manual_seed(0)
    enc = TextEncoder(BertModel(config, add_pooling_layer=False), tokenizer, context_length=positions,
                      pooling=pooling, **cache)
    enc.set_trainable_layers(trainable)
    return enc


def _cached(enc) -> int:
    return len(enc._text_cache) + len(enc._sentence_cache) + len(enc._token_cache)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_token_states_are_the_last_hidden_states_with_the_mask(pooling: str) -> None:
    enc = _tower(pooling).eval()
    batch = enc.tokenize(TOKEN_TEXTS)
    states, mask = enc.encode_tokens(**batch)
    n, length = batch["input_ids"].shape
    assert states.shape == (n, length, enc.width) and states.dtype == torch.float32
    assert torch.equal(mask, batch["attention_mask"])
    with torch.no_grad():
        hidden = enc.model(**batch).last_hidden_state
    keep = mask.bool()
    assert torch.equal(states[keep], hidden[keep]) and (states[~keep] == 0).all()
    states.sum().backward()  # a trainable tower gives gradients
    assert enc.model.embeddings.word_embeddings.weight.grad is not None and _cached(enc) == 0
    if pooling == "mean":
        m = mask.unsqueeze(-1).float()
        with torch.no_grad():
            assert torch.allclose((states * m).sum(1) / m.sum(1), enc(**batch), atol=1e-6)


def test_sentence_pooling_token_states_are_each_sentence_encoded_alone() -> None:
    enc = _tower("sentences", positions=16).eval()
    report = " ".join(["axial brain."] * 6)  # 20 tokens: more than the model's 16 positions
    batch = enc.tokenize([*TOKEN_TEXTS, report])
    with torch.no_grad():
        states, mask = enc.encode_tokens(**batch)
        alone = [enc.encode_tokens(**enc.tokenize([text]))[0][0] for text in ["axial brain.", "coronal spine."]]
    assert states.shape == (len(TOKEN_TEXTS) + 1, 20, enc.width) and torch.equal(mask, batch["attention_mask"])
    assert (states[~mask.bool()] == 0).all() and states[-1].abs().sum(-1).gt(0).all()
    # a one-sentence text: the whole text's states; "[CLS] a. b. [SEP]": a's [CLS] and tokens, then b's tokens and [SEP]
    assert torch.allclose(states[1, :5], alone[0], atol=1e-6)
    assert torch.allclose(states[0, :4], alone[0][:4], atol=1e-6)
    assert torch.allclose(states[0, 4:7], alone[1][1:4], atol=1e-6)
    with torch.no_grad():
        whole = enc.model(**enc.tokenize(["axial brain."])).last_hidden_state[0]
    assert torch.allclose(alone[0], whole, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "sentences"])
def test_frozen_token_states_are_cached_once_and_match_uncached(pooling: str) -> None:
    enc = _tower(pooling, trainable=0).train()  # a frozen tower encodes in eval mode for its cache
    reference = _tower(pooling).eval()
    batch = enc.tokenize(TOKEN_TEXTS)
    passes: list[int] = []
    enc.model.register_forward_pre_hook(lambda module, args, kwargs: passes.append(len(kwargs["input_ids"])),
                                        with_kwargs=True)
    first, mask = enc.encode_tokens(**batch)
    again, _ = enc.encode_tokens(**batch)
    with torch.no_grad():
        expected, _ = reference.encode_tokens(**batch)
    assert len(passes) == 1 and enc.model.training and not first.requires_grad
    assert torch.equal(first, again) and torch.allclose(first, expected, atol=1e-6)
    assert torch.equal(mask, batch["attention_mask"]) and len(enc._token_cache) > 0
    assert all(v.device.type == "cpu" for v in enc._token_cache._data.values())
    pooled = enc(**batch)  # pooled vectors have their own cache, and stay what the uncached tower gives
    with torch.no_grad():
        assert torch.allclose(pooled, reference(**batch), atol=1e-6)
    enc.set_trainable_layers(1)
    assert _cached(enc) == 0
    enc.encode_tokens(**batch)
    enc(**batch).sum().backward()
    assert _cached(enc) == 0  # a trainable tower never caches


@pytest.mark.parametrize("pooling", ["cls", "sentences"])
def test_frozen_caches_evict_beyond_their_bounds(pooling: str) -> None:
    width_bytes = 32 * 4
    bounded = _tower(pooling, trainable=0, cache_size=3, token_cache_bytes=12 * width_bytes)
    unbounded = _tower(pooling, trainable=0)
    uncached = _tower(pooling, trainable=0, cache_size=0, token_cache_bytes=0)
    words = ["axial", "coronal", "sagittal", "brain", "spine", "flair", "t1", "t2"]
    texts = [f"{a} {b}." for a in words for b in words[:3]]  # 24 distinct texts and sentences
    for chunk in [texts[:2], texts[2:12], texts[:5], texts[12:]]:  # chunks of more texts than the bounds too
        batch = bounded.tokenize(chunk)
        vectors, (states, _) = bounded(**batch), bounded.encode_tokens(**batch)
        assert len(bounded._text_cache) <= 3 and len(bounded._sentence_cache) <= 3
        assert 0 < bounded._token_cache.nbytes <= 12 * width_bytes
        for other in (unbounded, uncached):  # the same up to the batch each text was first encoded in
            assert torch.allclose(vectors, other(**batch), atol=1e-6)
            assert torch.allclose(states, other.encode_tokens(**batch)[0], atol=1e-6)
    assert len(unbounded._text_cache) == len(texts) and _cached(uncached) == 0


def test_lru_cache_keeps_the_most_recently_used_within_its_bounds() -> None:
    import copy

    from radlens.models.text_cache import LRUCache

    cache = LRUCache(max_entries=2)
    cache.put("a", torch.zeros(4))
    cache.put("b", torch.ones(4))
    assert cache.get("a") is not None  # "a" is now more recent than "b"
    cache.put("c", torch.ones(4))
    assert "a" in cache and "b" not in cache and "c" in cache and cache.nbytes == 32
    by_bytes = LRUCache(max_bytes=40)
    for key, n in (("x", 4), ("y", 4), ("z", 4), ("big", 11)):
        by_bytes.put(key, torch.zeros(n))
    assert sorted(by_bytes._data) == ["y", "z"] and by_bytes.nbytes == 32  # "big" alone exceeds the bound
    twin = copy.deepcopy(cache)
    assert len(twin) == 0 and twin.max_entries == 2 and len(cache) == 2
    with pytest.raises(ConfigError, match="text.cache_size"):
        _tower(cache_size=-1)
