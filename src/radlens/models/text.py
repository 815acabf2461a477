"""The text encoder: a transformers model + its tokenizer, pooled or per-token (built from a config by
:mod:`radlens.models.text_tower`: packaged MiniLM, any BERT-family checkpoint, or a tiny BERT from scratch).

A :class:`TextEncoder` owns its tokenizer, its context length and its overflow policy, so that
the same text always becomes the same tokens in training, evaluation and a reloaded bundle.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models.sentences import SentenceSplitter
from radlens.models.text_cache import LRUCache

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

    ``forward`` gives the pooled vectors; :meth:`encode_tokens` the per-token states (for
    cross-attention conditioning). A fully frozen tower caches both, per distinct text (per
    distinct sentence with ``sentences`` pooling), in least-recently-used caches on the CPU:
    ``cache_size`` pooled vectors (texts and sentences each; 0: none) and ``token_cache_bytes``
    bytes of per-token states (0: none).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        context_length: int = 128,
        pooling: str = "cls",
        on_overflow: str = "error",
        cache_size: int = 65_536,
        token_cache_bytes: int = 2**30,
    ) -> None:
        super().__init__()
        for name, bound in (("cache_size", cache_size), ("token_cache_bytes", token_cache_bytes)):
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
                raise ConfigError(f"text.{name} must be an int >= 0 (0: no cache), got {bound!r}")
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
        # Caches of a frozen tower, on the CPU: they are sized against host memory, not the
        # accelerator's (which the image tower or the UNet needs), and outlive moves between
        # devices; a batch is read with one host-to-device copy.
        self.cache_size, self.token_cache_bytes = cache_size, token_cache_bytes
        self._text_cache = LRUCache(max_entries=cache_size)  # pooled vector per distinct text
        self._sentence_cache = LRUCache(max_entries=cache_size)  # pooled vector per distinct sentence
        self._token_cache = LRUCache(max_bytes=token_cache_bytes)  # states per distinct text or sentence

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
        """One pooled vector per text, ``(B, width)``."""
        if not self._trainable():
            return self._frozen(input_ids, attention_mask)
        return self._pool(input_ids, attention_mask)

    def encode_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states of tokenised texts, not pooled: ``(states, attention_mask)``.

        ``states`` is ``(B, L, width)``, the transformer's last hidden states at the positions of
        ``input_ids`` (``L``: their padded length), zero at padding positions (so a text's states do
        not depend on what else is in the batch); ``attention_mask`` is the given ``(B, L)`` mask,
        1 at real tokens. For cross-attention conditioning: MONAI's ``DiffusionModelUNet(
        with_conditioning=True, cross_attention_dim=width)`` takes ``states`` as ``context`` (it
        takes no mask, so it attends to the zero padding states too).

        With ``cls``/``mean`` pooling the whole text is encoded at once: ``states`` is
        ``model(input_ids, attention_mask).last_hidden_state`` (mean-pooled over the mask it is the
        ``mean`` vector). With ``sentences`` pooling each sentence is encoded alone, as for the
        pooled vector (so a report may have more tokens than the model has positions): a text's
        states are its sentences' token states in order, its [CLS] state its first sentence's and
        its [SEP] state its last sentence's. A one-sentence text gets the states of the whole text
        encoded at once; tokens do not attend across sentences.

        A trainable tower runs every call, with gradients. A frozen one runs in eval mode without
        gradients and caches the states per distinct text (per distinct sentence with ``sentences``
        pooling) on the CPU, at most ``token_cache_bytes`` bytes of them.
        """
        keep = attention_mask.bool()
        if self.splitter is not None:
            return self._sentence_tokens(input_ids, keep), attention_mask
        if self._trainable():
            states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return states.masked_fill(~keep.unsqueeze(-1), 0), attention_mask
        keys = _keys(input_ids, keep)
        found = _lookup(self._token_cache, keys)
        todo = sorted({key: i for i, key in enumerate(keys) if key not in found}.values(), key=lambda i: keys[i])
        if todo:
            with self._frozen_pass():
                hidden = self.model(input_ids=input_ids[todo], attention_mask=attention_mask[todo]).last_hidden_state
            kept = keep[todo].cpu()
            _store(self._token_cache, [keys[i] for i in todo], [h[m] for h, m in zip(hidden.cpu(), kept)], found)
        flat = torch.cat([found[key] for key in keys])
        states = flat.new_zeros(*keep.shape, flat.shape[-1], device=input_ids.device)
        states[keep] = flat.to(input_ids.device)
        return states, attention_mask

    def _frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """A fully frozen tower (``trainable_layers: 0``, LiT-style) gives each distinct text the same
        vector every time (in eval mode), so it runs once per distinct text and is then read from a
        cache: after the first epoch, training on captions or reports costs no text passes at all
        (while the distinct texts fit in ``cache_size``; beyond it the least recently used go)."""
        keys = _keys(input_ids, attention_mask.bool())
        found = _lookup(self._text_cache, keys)
        todo = sorted({i for i, key in enumerate(keys) if key not in found}, key=lambda i: keys[i])
        if todo:
            with self._frozen_pass():
                fresh = self._pool(input_ids[todo], attention_mask[todo])
            _store(self._text_cache, [keys[i] for i in todo], [v.clone() for v in fresh.cpu()], found)
        return torch.stack([found[key] for key in keys]).to(input_ids.device)

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
        demo's 376 phantom CT reports hold 5,161 sentences but only 290 distinct ones; beyond
        ``cache_size`` distinct sentences the least recently used are encoded again)."""
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
        if self._trainable():
            hidden, mask = self._encode_sentences(pieces, device)
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # nothing is cached for a trainable tower
        found = _lookup(self._sentence_cache, pieces)
        todo = [p for p in pieces if p not in found]
        if todo:
            with self._frozen_pass():
                hidden, mask = self._encode_sentences(todo, device)
                m = mask.unsqueeze(-1).to(hidden.dtype)
                fresh = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            _store(self._sentence_cache, todo, [v.clone() for v in fresh.cpu()], found)
        return torch.stack([found[p] for p in pieces]).to(device)

    def _encode_sentences(
        self, pieces: Sequence[tuple[int, ...]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states and mask of sentences encoded alone, as ``[CLS] sentence [SEP]``."""
        assert self.splitter is not None
        batch = self.tokenizer.pad({"input_ids": self.splitter.with_specials(pieces)}, return_tensors="pt")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def _sentence_tokens(self, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Per-token states with ``sentences`` pooling (see :meth:`encode_tokens`), ``(B, L, width)``."""
        assert self.splitter is not None
        ids, mask = input_ids.tolist(), keep.int().tolist()
        distinct = sorted(set(self.splitter.split_batch(ids, mask)[0]))
        states = self._sentence_states(distinct, input_ids.device)
        start: dict[tuple[int, ...], int] = {}
        row = 0
        for piece in distinct:
            start[piece], row = row, row + len(piece) + 2
        rows = [r for text, m in zip(ids, mask) for r in self.splitter.token_rows(text, m, start)]
        out = states.new_zeros(*keep.shape, states.shape[-1])
        out[keep] = states[torch.tensor(rows, dtype=torch.long, device=states.device)]
        return out

    def _sentence_states(self, pieces: list[tuple[int, ...]], device: torch.device) -> torch.Tensor:
        """The token states of each sentence encoded alone (``len(piece) + 2`` rows each, [CLS] and
        [SEP] included), one sentence after the other; cached per sentence when frozen."""
        if self._trainable():
            hidden, mask = self._encode_sentences(pieces, device)
            return hidden[mask.bool()]
        found = _lookup(self._token_cache, pieces)
        todo = [p for p in pieces if p not in found]
        if todo:
            with self._frozen_pass():
                hidden, mask = self._encode_sentences(todo, device)
            kept = mask.bool().cpu()
            _store(self._token_cache, todo, [h[m] for h, m in zip(hidden.cpu(), kept)], found)
        return torch.cat([found[p] for p in pieces]).to(device)

    def _trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    @contextmanager
    def _frozen_pass(self) -> Iterator[None]:
        """Eval mode and no autograd, to encode for a frozen tower's caches: it has no use for
        dropout, and must be deterministic to cache."""
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(training)

    def clear_cache(self) -> None:
        """Empty the frozen tower's caches (pooled vectors and per-token states)."""
        self._text_cache.clear()
        self._sentence_cache.clear()
        self._token_cache.clear()

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
        changes, and weights must not be loaded into a frozen tower after it has encoded texts
        (unless :meth:`clear_cache` is called then)."""
        self.clear_cache()
        for p in self.model.parameters():
            p.requires_grad_(n is None)
        if n:
            for layer in _layers(self.model)[-n:]:
                for p in layer.parameters():
                    p.requires_grad_(True)


Key = tuple[int, ...]


def _keys(input_ids: torch.Tensor, keep: torch.Tensor) -> list[Key]:
    """Each text's unpadded ids, the key of its cache entries (read with one device-to-host copy)."""
    ids, keep = input_ids.cpu(), keep.cpu()
    return [tuple(row[m].tolist()) for row, m in zip(ids, keep)]


def _lookup(cache: LRUCache, keys: Sequence[Key]) -> dict[Key, torch.Tensor]:
    """The cached values of ``keys`` (each now the most recently used); missing keys are left out."""
    found: dict[Key, torch.Tensor] = {}
    for key in keys:
        if key not in found and (value := cache.get(key)) is not None:
            found[key] = value
    return found


def _store(
    cache: LRUCache, keys: Sequence[Key], values: Sequence[torch.Tensor], found: dict[Key, torch.Tensor]
) -> None:
    """Put freshly encoded CPU ``values`` (sharing no storage) in ``found`` and in ``cache``. Callers
    read ``found``, not the cache: with more new keys than its bound, the first are evicted already."""
    for key, value in zip(keys, values):
        found[key] = value
        cache.put(key, value)


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
