"""The VocabFine task: present/absent prompt-pair cross-entropy on a CLIP model (both towers train)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from radlens.train.config import OptimConfig
from radlens.train.multilabel import FindingScoresTask
from radlens.train.task import Step

if TYPE_CHECKING:
    from radlens.models.clip import CLIPModel
    from radlens.models.prompts import PromptSet


class VocabFineTask(FindingScoresTask):
    """Pair cross-entropy over (image, finding); logs ``val/loss`` and ``val/mean_auroc`` (zero-shot)."""

    def __init__(self, model: CLIPModel, prompts: PromptSet, optim: OptimConfig | None = None) -> None:
        super().__init__(model, optim)
        texts = [t for pair in zip(prompts.present, prompts.absent) for side in pair for t in side]
        tokens = model.tokenize(texts)
        # (2F, T) averaging matrix: row 2f is finding f's present phrasings, row 2f+1 its absent ones.
        sizes = [len(side) for pair in zip(prompts.present, prompts.absent) for side in pair]
        rows = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        average = torch.zeros(len(sizes), len(texts))
        average[rows, torch.arange(len(texts))] = 1.0 / torch.tensor(sizes, dtype=torch.float32)[rows]
        self.register_buffer("prompt_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("prompt_mask", tokens["attention_mask"], persistent=False)
        self.register_buffer("prompt_average", average, persistent=False)

    def pair_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, F, 2) logits: [..., 0] present, [..., 1] absent."""
        img = self.model.encode_image(images)
        txt = F.normalize(self.prompt_average @ self.model.encode_text(self.prompt_ids, self.prompt_mask), dim=-1)
        return (self.model.logit_scale * img @ txt.T).view(len(img), -1, 2)

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        logits = self.pair_logits(batch["inputs"]["images"])
        target = (1 - batch["targets"]).long()  # class 0 = present
        loss = F.cross_entropy(logits.reshape(-1, 2).float(), target.reshape(-1))
        if stage == "train":
            return Step(loss, {"logit_scale": self.model.logit_scale})
        return Step(loss, keep={"scores": logits.float().softmax(-1)[..., 0].cpu(), "targets": batch["targets"].cpu()})


class PairScorer(torch.nn.Module):
    """``forward(images)`` -> (B, F) present-minus-absent logits of a :class:`VocabFineTask`, whose sigmoid is
    P(present) (the softmax over each pair), so :func:`radlens.train.multilabel.predict_scores` scores it."""

    def __init__(self, task: VocabFineTask) -> None:
        super().__init__()
        self.task = task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.task.pair_logits(images)
        return logits[..., 0] - logits[..., 1]
