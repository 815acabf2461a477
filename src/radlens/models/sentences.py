"""Sentence splitting on token ids, for the ``sentences`` pooling of :class:`radlens.models.text.TextEncoder`.

Texts are tokenised once as a whole (the collate function's job); the encoder then splits the ids
into sentences, so splitting works on WordPiece tokens: a sentence ends at ".", "!" or "?" unless
the next token continues a number or an abbreviation ("3.5 mm", "approx. 2 cm"), or the "."
follows a single letter ("e.g. stable").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from radlens.errors import ConfigError


class SentenceSplitter:
    """Splits a tokenizer's ids into sentences; the context length bounds a sentence, not the text."""

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ConfigError("text.pooling 'sentences' needs a tokenizer with [CLS] and [SEP] tokens (BERT family)")
        self.tokenizer = tokenizer
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        ends = tokenizer.convert_tokens_to_ids([".", "!", "?"])
        self.ends = {i for i in ends if i is not None and i != tokenizer.unk_token_id}

    def _single_letter(self, token_id: int) -> bool:
        token = str(self.tokenizer.convert_ids_to_tokens(token_id))
        return len(token) == 1 and token.isalpha()

    def _continues(self, after: Sequence[int]) -> bool:
        """Whether the tokens after a "." carry on the same sentence: a digit or a word piece ("3.5"),
        or one letter followed by "." ("e.g."); a sentence starting with "A" or "I" is a new one."""
        token = str(self.tokenizer.convert_ids_to_tokens(after[0]))
        abbreviation = self._single_letter(after[0]) and len(after) > 1 and after[1] in self.ends
        return token.startswith("##") or token[:1].isdigit() or abbreviation

    def pieces(self, body: Sequence[int]) -> list[tuple[int, ...]]:
        """The sentences of one text's ids (without [CLS]/[SEP]); an empty text is one empty sentence."""
        out: list[tuple[int, ...]] = []
        sentence: list[int] = []
        for j, t in enumerate(body):
            sentence.append(t)
            if t not in self.ends or (j > 0 and self._single_letter(body[j - 1])):  # "e.g." is no end
                continue
            if j + 1 == len(body) or not self._continues(body[j + 1 : j + 3]):
                out.append(tuple(sentence))
                sentence = []
        if sentence or not out:
            out.append(tuple(sentence))
        return out

    def body(self, ids: Sequence[int], mask: Sequence[int] | None = None) -> list[int]:
        """The ids of a text without padding and without [CLS]/[SEP]."""
        mask = mask if mask is not None else [1] * len(ids)
        return [t for t, m in zip(ids, mask) if m and t not in (self.cls, self.sep)]

    def fit(self, ids: Sequence[int], context_length: int) -> tuple[list[int], int]:
        """``ids`` with every sentence cut to ``context_length`` (with its [CLS]/[SEP]); and the
        length of the longest sentence before cutting."""
        pieces = self.pieces(self.body(ids))
        limit = context_length - 2
        kept = [t for piece in pieces for t in piece[:limit]]
        return [self.cls, *kept, self.sep], max(len(p) for p in pieces) + 2

    def split_batch(
        self, input_ids: list[list[int]], attention_mask: list[list[int]]
    ) -> tuple[list[tuple[int, ...]], list[int]]:
        """Every text's sentences, and for each the index of the text it came from."""
        pieces: list[tuple[int, ...]] = []
        owner: list[int] = []
        for b, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            text_pieces = self.pieces(self.body(ids, mask))
            pieces.extend(text_pieces)
            owner.extend([b] * len(text_pieces))
        return pieces, owner

    def with_specials(self, pieces: Sequence[tuple[int, ...]]) -> list[list[int]]:
        return [[self.cls, *p, self.sep] for p in pieces]

    def token_rows(
        self, ids: Sequence[int], mask: Sequence[int], start: dict[tuple[int, ...], int]
    ) -> list[int]:
        """For each unpadded token of one text, the row of its state among sentence states.

        The sentences are encoded alone as ``[CLS] sentence [SEP]``, sentence ``p``'s states at rows
        ``start[p] ...``. A sentence token takes its own row; the text's [CLS] takes its first
        sentence's [CLS] row and the text's [SEP] its last sentence's [SEP] row.
        """
        pieces = self.pieces(self.body(ids, mask))
        body = iter([start[p] + 1 + j for p in pieces for j in range(len(p))])
        first, last = start[pieces[0]], start[pieces[-1]] + len(pieces[-1]) + 1
        rows: list[int] = []
        for t, m in zip(ids, mask):
            if m:
                rows.append(first if t == self.cls else last if t == self.sep else next(body))
        return rows
