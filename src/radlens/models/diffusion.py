"""The text-conditioned latent diffusion UNet and its noise schedule.

Component ``diffusion_unet``: MONAI's ``DiffusionModelUNet`` (cross-attention on per-token text
states, ``cross_attention_dim`` = the text tower's width) plus what the weights were trained with
and cannot be used without: the noise schedule (``num_train_timesteps``, ``schedule``,
``beta_start``/``beta_end``, ``prediction_type``) and ``sample_size``, the latent spatial size of
training. The defaults are Stable Diffusion's (and MRGen's): a scaled-linear schedule of 1000 steps
from 0.00085 to 0.012, epsilon prediction. ``train_scheduler()`` gives MONAI's ``DDPMScheduler``
for training and ``sampling_scheduler(steps)`` its ``DDIMScheduler`` (``clip_sample`` off, as
latents are not bounded; ``steps_offset`` 1 and ``set_alpha_to_one`` off, as Stable Diffusion).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from radlens.errors import ConfigError
from radlens.models.components import component

SCHEDULES = ("scaled_linear_beta", "linear_beta", "sigmoid_beta")
PREDICTIONS = ("epsilon", "v_prediction")


@component("diffusion_unet", family="generative")
class DiffusionUNet(DiffusionModelUNet):
    """MONAI ``DiffusionModelUNet`` with its noise schedule and latent ``sample_size`` in the config.

    ``num_head_channels`` is channels per attention head (one value or one per level), MONAI's
    meaning. ``sample_size`` (the latent ``[h, w]`` it was trained on; None before training) is
    checked against the autoencoder when the two are put together.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 4,
        out_channels: int = 4,
        channels: Sequence[int] = (32, 64, 64, 64),
        num_res_blocks: int | Sequence[int] = 2,
        attention_levels: Sequence[bool] = (False, False, True, True),
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        resblock_updown: bool = False,
        num_head_channels: int | Sequence[int] = 8,
        with_conditioning: bool = True,
        transformer_num_layers: int = 1,
        cross_attention_dim: int | None = 384,
        upcast_attention: bool = False,
        use_flash_attention: bool = False,
        sample_size: Sequence[int] | None = None,
        num_train_timesteps: int = 1000,
        schedule: str = "scaled_linear_beta",
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        prediction_type: str = "epsilon",
    ) -> None:
        if schedule not in SCHEDULES or prediction_type not in PREDICTIONS:
            raise ConfigError(f"diffusion_unet: schedule must be one of {', '.join(SCHEDULES)} and prediction_type one of "
                              f"{', '.join(PREDICTIONS)}, got {schedule!r}, {prediction_type!r}")
        if num_train_timesteps < 2 or not 0 < beta_start < beta_end < 1:
            raise ConfigError(f"diffusion_unet: num_train_timesteps must be >= 2 and 0 < beta_start < beta_end < 1, got "
                              f"{num_train_timesteps}, {beta_start}, {beta_end}")
        if with_conditioning and not cross_attention_dim:
            raise ConfigError("diffusion_unet: with_conditioning needs cross_attention_dim (the text tower's width)")
        if sample_size is not None and (len(sample_size) != spatial_dims or min(sample_size) < 1):
            raise ConfigError(f"diffusion_unet: sample_size must be {spatial_dims} positive sides, got {list(sample_size)}")
        try:
            super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                             num_res_blocks=num_res_blocks, channels=channels, attention_levels=attention_levels,
                             norm_num_groups=norm_num_groups, norm_eps=norm_eps, resblock_updown=resblock_updown,
                             num_head_channels=num_head_channels, with_conditioning=with_conditioning,
                             transformer_num_layers=transformer_num_layers,
                             cross_attention_dim=cross_attention_dim if with_conditioning else None,
                             upcast_attention=upcast_attention, use_flash_attention=use_flash_attention)
        except ValueError as err:  # MONAI's own checks (channels vs groups, heads, lengths)
            raise ConfigError(f"diffusion_unet: {err}") from err
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.cross_attention_dim = cross_attention_dim if with_conditioning else None
        self.sample_size = None if sample_size is None else tuple(int(s) for s in sample_size)
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.schedule_args: dict[str, Any] = {"num_train_timesteps": num_train_timesteps, "schedule": schedule,
                                              "beta_start": beta_start, "beta_end": beta_end,
                                              "prediction_type": prediction_type}

    @staticmethod
    def describe(config: dict) -> str:
        """One line for ``radlens models``."""
        return (f"DiffusionModelUNet {'-'.join(map(str, config.get('channels', [])))}, {config.get('in_channels')} latent "
                f"channels, cross-attention {config.get('cross_attention_dim')}")

    def train_scheduler(self) -> DDPMScheduler:
        """MONAI's DDPM scheduler of this UNet's noise schedule (``add_noise``, ``get_velocity``)."""
        args = self.schedule_args
        return DDPMScheduler(num_train_timesteps=args["num_train_timesteps"], schedule=args["schedule"],
                             beta_start=args["beta_start"], beta_end=args["beta_end"], clip_sample=False,
                             prediction_type=args["prediction_type"])

    def sampling_scheduler(self, steps: int = 50) -> DDIMScheduler:
        """MONAI's DDIM scheduler of this UNet's noise schedule, set to ``steps`` inference steps."""
        args = self.schedule_args
        if not 1 <= steps <= args["num_train_timesteps"]:
            raise ConfigError(f"steps must be in 1..{args['num_train_timesteps']}, got {steps}")
        scheduler = DDIMScheduler(num_train_timesteps=args["num_train_timesteps"], schedule=args["schedule"],
                                  beta_start=args["beta_start"], beta_end=args["beta_end"], clip_sample=False,
                                  set_alpha_to_one=False, steps_offset=1, prediction_type=args["prediction_type"])
        scheduler.set_timesteps(steps)
        return scheduler

    def check_latents(self, latent_channels: int, latent_size: Sequence[int], where: str) -> None:
        """ConfigError (naming ``where``) unless latents of ``latent_channels`` x ``latent_size`` fit this UNet:
        its in/out channels, its training ``sample_size`` and its down-sampling."""
        size = tuple(int(s) for s in latent_size)
        problems = []
        if latent_channels != self.in_channels or latent_channels != self.out_channels:
            problems.append(f"{latent_channels} latent channels but the UNet takes {self.in_channels} and gives {self.out_channels}")
        if self.sample_size is not None and size != self.sample_size:
            problems.append(f"latent size {list(size)} but the UNet was trained on {list(self.sample_size)}")
        if any(s % self.downsample_factor for s in size):
            problems.append(f"latent size {list(size)} is not divisible by the UNet's down-sampling {self.downsample_factor}")
        if problems:
            raise ConfigError(f"{where}: {'; '.join(problems)}")
