"""Batched generation and segmentation of many masks' candidates (the expensive part of ``radlens synth``).

Candidates of several masks share a batch (``batch_size`` images per sampler call), so small masks
and CPU runs keep the networks busy; every candidate's noise comes from its own seed
(:func:`radlens.models.sampling.item_noise`), so batching never changes an image. Prompt states are
encoded once per distinct prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from radlens.models.generator import Generator
    from radlens.models.segmenter import Segmenter


@dataclass(frozen=True)
class SamplerConfig:
    """How candidates are sampled (DDIM with classifier-free guidance, see :func:`radlens.models.sampling.sample`).

    Attributes:
        steps: DDIM steps per image (MRGen: 50).
        guidance: classifier-free guidance scale (MRGen: 7; 1 = conditional branch only).
        conditioning_scale: weight of the ControlNet's residuals (1: as trained).
        batch_size: images generated (and segmented) per network call; candidates of several masks share a batch.
    """

    steps: int = 50
    guidance: float = 7.0
    conditioning_scale: float = 1.0
    batch_size: int = 20


@dataclass(frozen=True)
class Job:
    """One mask to generate candidates for: its prompt, label map ``(H, W)`` and one seed per candidate."""

    prompt: str
    mask: np.ndarray
    seeds: tuple[int, ...]


class PromptCache:
    """Per-token states of each distinct prompt, encoded once."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self._states: dict[str, torch.Tensor] = {}
        self._null: torch.Tensor | None = None

    def conditioning(self, prompts: Sequence[str]) -> object:
        """The :class:`radlens.models.sampling.Conditioning` of ``prompts`` (in order)."""
        import torch

        from radlens.models.sampling import Conditioning

        new = sorted({p for p in prompts if p not in self._states})
        if new:
            encoded = self.generator.encode(new)
            self._states.update(zip(new, encoded.states))
            self._null = encoded.null
        assert self._null is not None
        return Conditioning(torch.stack([self._states[p] for p in prompts]), self._null)


def generate(generator: Generator, jobs: Sequence[Job], cfg: SamplerConfig, cache: PromptCache,
             value_range: tuple[float, float], segmenter: Segmenter | None = None) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Per job: its candidates ``(N, H, W)`` float32 (clipped to ``value_range``, the range of the prepared
    images) and, with a segmenter, their segmentations ``(N, H, W)`` (label ids); in job order."""
    import torch

    from radlens.models.sampling import sample

    flat = [(k, j) for k, job in enumerate(jobs) for j in range(len(job.seeds))]
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    device = next(generator.unet.parameters()).device
    lo, hi = value_range
    for start in range(0, len(flat), cfg.batch_size):
        chunk = flat[start : start + cfg.batch_size]
        prompts = [jobs[k].prompt for k, _ in chunk]
        masks = torch.from_numpy(np.stack([np.asarray(jobs[k].mask, dtype=np.int64) for k, _ in chunk]))[:, None]
        seeds = [jobs[k].seeds[j] for k, j in chunk]
        out = sample(generator.vae, generator.unet, generator.controlnet, cache.conditioning(prompts), masks.to(device),
                     seed=seeds, steps=cfg.steps, guidance=cfg.guidance, conditioning_scale=cfg.conditioning_scale)
        out = out.clamp(lo, hi)
        images.append(out[:, 0].cpu().numpy().astype(np.float32))
        if segmenter is not None:
            with torch.inference_mode():
                labels.append(segmenter.segment(out.to(next(segmenter.parameters()).device)).cpu().numpy())
    all_images = np.concatenate(images) if images else np.zeros((0, 0, 0), np.float32)
    all_labels = np.concatenate(labels) if labels else None
    results, at = [], 0
    for job in jobs:
        n = len(job.seeds)
        results.append((all_images[at : at + n], None if all_labels is None else all_labels[at : at + n]))
        at += n
    return results
