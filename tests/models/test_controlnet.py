"""The mask ControlNet: built to match a UNet, initialised from it, masks encoded at image resolution."""

from __future__ import annotations

import pytest
import torch
from support.generative_bundles import tiny_unet

from radlens.errors import ConfigError
from radlens.models.controlnet import REFERENCE_EMBEDDING, controlnet_for, embedding_channels


def test_it_copies_the_unet_and_starts_as_a_no_op() -> None:
    unet = tiny_unet()
    net = controlnet_for(unet, downsample_factor=4, num_labels=5)
    assert net.config["conditioning_channels"] == [16, 32, 96] and net.mask_downsample_factor == 4 and not net.mismatch(unet)
    ours, theirs = net.state_dict(), unet.state_dict()
    shared = [k for k in ours if k in theirs]
    assert len(shared) > 50 and all(torch.equal(ours[k], theirs[k]) for k in shared)  # the UNet's encoder and middle
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 384)
    mask = torch.randint(0, 5, (2, 1, 32, 32))
    with torch.no_grad():
        down, mid = net(x=x, timesteps=t, controlnet_cond=net.encode_mask(mask), context=context)
        steered = unet(x, t, context=context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        assert torch.equal(steered, unet(x, t, context=context))  # zero-initialised outputs: the UNet as it was
    assert embedding_channels(8) == list(REFERENCE_EMBEDDING) and embedding_channels(16) == [16, 32, 96, 256, 512]
    with pytest.raises(ConfigError, match="halve the mask 1 times, but the autoencoder down-samples by 4"):
        controlnet_for(unet, 4, 5, conditioning_channels=[8, 16])


def test_masks_are_one_channel_per_label_or_grey_levels() -> None:
    unet = tiny_unet()
    mask = torch.tensor([[[[0, 1], [2, -1]]]])  # -1: unknown, as background
    onehot = controlnet_for(unet, 4, 3, "onehot").encode_mask(mask)
    assert onehot.shape == (1, 2, 2, 2) and onehot[0, :, 0, 1].tolist() == [1, 0] and onehot[0, :, 1, 0].tolist() == [0, 1]
    assert onehot[0, :, 0, 0].tolist() == [0, 0] and onehot[0, :, 1, 1].tolist() == [0, 0]
    grey = controlnet_for(unet, 4, 3, "grey")
    assert grey.encode_mask(mask)[0, 0].tolist() == [[0.0, 0.5], [1.0, 0.0]]
    with pytest.raises(ConfigError, match="mask label 3 is outside this ControlNet's 3 labels"):
        grey.encode_mask(torch.full((1, 1, 2, 2), 3))
    with pytest.raises(ConfigError, match="mask_encoding must be one of onehot, grey"):
        controlnet_for(unet, 4, 3, "rgb")
