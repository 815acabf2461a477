"""Zero-shot classifiers over a CLIP model: prompt embeddings encoded once, images scored by a product.

:class:`ZeroShotClassifier` (present/absent pairs, one per finding) and
:class:`ClassZeroShotClassifier` (mutually exclusive classes) live with the models rather than
with the evaluation commands because training uses them too: ``radlens train clip --val_zeroshot.*``
selects checkpoints by the zero-shot metric on the validation split
(:mod:`radlens.train.clip_zeroshot`), and ``radlens evaluate zeroshot`` scores the test split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.models.prompts import ClassPrompts, PromptSet, encode_prompt_groups

if TYPE_CHECKING:
    import torch

    from radlens.io.prepared import PreparedDataset
    from radlens.models.clip import CLIPModel
    from radlens.prepare.captions import CaptionConfig


class ZeroShotClassifier:
    """P(finding present) for image embeddings, from prompt embeddings encoded once.

    ``text_embeddings`` is the cached (F, 2, D) tensor: [:, 0] present, [:, 1] absent, each the
    re-normalised mean of its phrasings. A softmax over two logits is the sigmoid of their
    difference, so the pair folds into one (D, F) matrix ``scale * (present - absent)`` and a
    volume costs one image pass plus one small matmul (numpy: no thread-pool start-up per call).
    """

    def __init__(self, model: CLIPModel, prompts: PromptSet, batch_size: int = 64) -> None:
        import torch

        self.model, self.prompts = model, prompts
        self.findings = prompts.findings
        with torch.inference_mode():
            self.text_embeddings = self._encode_prompts(batch_size)
            self.logit_scale = float(model.logit_scale)
        pair = self.text_embeddings.double().cpu().numpy()
        self._weights = self.logit_scale * (pair[:, 0] - pair[:, 1]).T

    def _encode_prompts(self, batch_size: int) -> torch.Tensor:
        """Encode every phrasing once (batched), then average per finding and side: (F, 2, D)."""
        groups = [side for pair in zip(self.prompts.present, self.prompts.absent) for side in pair]
        return encode_prompt_groups(self.model, groups, batch_size).reshape(len(self.findings), 2, -1)

    def probabilities(self, image_embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B, D) L2-normalised image embeddings -> (B, F) P(present) = softmax over each pair."""
        import torch

        emb = image_embeddings.detach().cpu().numpy() if torch.is_tensor(image_embeddings) else image_embeddings
        margin = np.asarray(emb, dtype=np.float64) @ self._weights
        return 1.0 / (1.0 + np.exp(-margin))

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """(B, C, *spatial) model-ready images -> (B, F) P(present): one image pass."""
        import torch

        with torch.inference_mode():
            return self.probabilities(self.model.encode_image(images))


class ClassZeroShotClassifier:
    """P(class | image) for image embeddings, from class embeddings encoded once.

    ``text_embeddings`` is the cached (C, D) tensor, each row the re-normalised mean of the
    class's prompt embeddings; probabilities are ``softmax(logit_scale * image @ text.T)``.
    """

    def __init__(self, model: CLIPModel, prompts: ClassPrompts, batch_size: int = 64) -> None:
        import torch

        self.model, self.prompts, self.classes = model, prompts, prompts.classes
        with torch.inference_mode():
            self.text_embeddings = encode_prompt_groups(model, prompts.prompts, batch_size)
            self.logit_scale = float(model.logit_scale)
        self._weights = self.logit_scale * self.text_embeddings.double().cpu().numpy().T

    def probabilities(self, image_embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B, D) L2-normalised image embeddings -> (B, C) class probabilities (rows sum to 1)."""
        from scipy.special import softmax

        emb = image_embeddings.detach().cpu().numpy() if hasattr(image_embeddings, "detach") else image_embeddings
        return softmax(np.asarray(emb, dtype=np.float64) @ self._weights, axis=1)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """(B, C_in, *spatial) model-ready images -> (B, C) class probabilities: one image pass."""
        import torch

        with torch.inference_mode():
            return self.probabilities(self.model.encode_image(images))


def dataset_caption_config(ds: PreparedDataset) -> CaptionConfig:
    """The caption config the dataset's captions were made with (its card), else MR-CLIP's default."""
    from radlens.prepare.captions import CaptionConfig

    values = (ds.card.get("config") or {}).get("caption")
    if not isinstance(values, dict):
        return CaptionConfig()
    try:
        return CaptionConfig(**values)
    except (TypeError, ConfigError) as err:
        raise InputError(ds.path / "dataset.json", f"config.caption is not a caption config ({err})") from err
