"""The typed option groups shared by ``radlens train vae``, ``train ldm`` and ``train controlnet`` (kept light:
the CLI imports them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from radlens.data.augment import AugmentConfig
from radlens.train.config import OptimConfig, TrainerConfig

# AdamW as Stable Diffusion / MRGen train their stages (lr 1e-4, PyTorch's betas), a short warm-up.
GENERATIVE_OPTIM = OptimConfig(lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, warmup_steps=100)
GENERATIVE_TRAINER = TrainerConfig(max_steps=1000, val_every_n_steps=200, checkpoint_every_n_steps=200)


@dataclass
class GenerationDataConfig:
    """Batches and loaders of the generative commands (the dataset is the command's PREPARED argument).

    Attributes:
        batch_size: slices per training batch (per device).
        eval_batch_size: slices per validation batch (default: batch_size).
        num_workers: data loader worker processes.
        augment: spatial/intensity augmentation of training slices, masks moved with their images
            (off by default: a generative model learns the data as it is).
    """

    batch_size: int = 8
    eval_batch_size: int | None = None
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(enabled=False))


@dataclass
class VAELossConfig:
    """The autoencoder's loss: ``MSE(reconstruction, image) + kl_weight * KL(q(z|x) || N(0, I))``, the MSE per
    pixel and the KL per latent element, both averaged (so the weight means the same at any image size; with the
    KL summed over a 16x64x64 latent, 1e-4 would outweigh the MSE and pull the latents to the prior).

    Attributes:
        kl_weight: weight of the per-element KL term (1e-4: a light pull toward N(0, 1); the latent scale is
            estimated after training anyway).
    """

    kl_weight: float = 1e-4
