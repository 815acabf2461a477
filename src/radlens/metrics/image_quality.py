"""Per-image PSNR and SSIM (MONAI's ``PSNRMetric`` / ``SSIMMetric``) against references, with a declared data range.

SSIM uses the standard window: an 11-pixel Gaussian of sigma 1.5 (Wang et al. 2004), k1 0.01, k2
0.03. The data range is the span the images are stored in (a prepared MRI dataset: 1.0 for its
[0, 1] values; :attr:`radlens.io.prepared.PreparedDataset.value_range`), declared rather than taken
from each image's own min and max, so numbers are comparable across images and datasets.
"""

from __future__ import annotations

import torch

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM ``(B,)`` of ``pred`` vs ``target`` ``(B, C, *spatial)`` (2D or 3D), in float32.

    Nothing is clipped: the numbers judge what the model outputs. PSNR is ``10 log10(data_range^2 / MSE)``
    (infinite for identical images); per-channel values are averaged.
    """
    from monai.metrics import PSNRMetric, SSIMMetric

    if pred.shape != target.shape or pred.ndim not in (4, 5):
        raise ValueError(f"pred and target must be equal (B, C, *spatial) 2D/3D batches, got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.detach().float(), target.detach().float()
    psnr = PSNRMetric(max_val=data_range, reduction="none")(pred, target)
    ssim = SSIMMetric(spatial_dims=pred.ndim - 2, data_range=data_range, kernel_type="gaussian", win_size=SSIM_WINDOW,
                      kernel_sigma=SSIM_SIGMA, reduction="none")(pred, target)
    return psnr.reshape(len(pred), -1).mean(1), ssim.reshape(len(pred), -1).mean(1)
