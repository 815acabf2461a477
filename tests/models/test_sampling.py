"""DDIM sampling with classifier-free guidance on the empty prompt's states, with and without a mask ControlNet."""

from __future__ import annotations

import pytest
import torch
from support.generative_bundles import frozen_minilm, tiny_unet, tiny_vae

from radlens.errors import ConfigError
from radlens.models.controlnet import controlnet_for
from radlens.models.sampling import encode_prompts, prompt_states, sample


@pytest.fixture(scope="module")
def parts() -> dict:
    unet = tiny_unet(nudge=0.05)  # untrained, its cross-attention output is zero: nudged, the text matters
    return {"vae": tiny_vae(), "unet": unet, "text": frozen_minilm(), "controlnet": controlnet_for(unet, 4, 3).eval()}


def test_prompt_states_are_padded_to_the_context_length_and_do_not_depend_on_the_batch(parts: dict) -> None:
    text = parts["text"]
    one = prompt_states(text, ["T2w brain MRI"])
    two = prompt_states(text, ["T2w brain MRI", "a much longer prompt naming grey matter, white matter and a lesion"])
    assert one.shape == (1, text.context_length, text.width) and torch.allclose(one[0], two[0], atol=1e-6)
    cond = encode_prompts(text, ["T1w brain MRI"])
    assert cond.null.shape == (1, 128, 384) and torch.equal(cond.null, prompt_states(text, [""]))
    assert (cond.null[0, 2:] == 0).all()  # the empty prompt is [CLS] [SEP], then padding


def test_each_item_is_reproduced_by_its_seed_in_any_batch(parts: dict) -> None:
    vae, unet, text, controlnet = parts["vae"], parts["unet"], parts["text"], parts["controlnet"]
    prompts = encode_prompts(text, ["T2w brain MRI, grey matter", "T1w brain MRI"])
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    mask[:, :, 8:24, 8:24] = 2
    images = sample(vae, unet, controlnet, prompts, mask, seed=[11, 12], steps=4)
    assert images.shape == (2, 1, 32, 32) and images.dtype == torch.float32 and torch.isfinite(images).all()
    alone = sample(vae, unet, controlnet, encode_prompts(text, ["T1w brain MRI"]), mask[1:], seed=[12], steps=4)
    assert torch.allclose(alone[0], images[1], atol=1e-5)
    assert torch.allclose(sample(vae, unet, controlnet, prompts, mask, seed=11, steps=4), images, atol=1e-6)  # 11, 12
    unguided = sample(vae, unet, None, prompts, None, seed=[11, 12], steps=4, guidance=1.0)
    guided = sample(vae, unet, None, prompts, None, seed=[11, 12], steps=4, guidance=7.0)
    assert unguided.shape == (2, 1, 32, 32) and not torch.allclose(unguided, guided)  # size from the UNet's sample_size


def test_bad_requests_are_config_errors(parts: dict) -> None:
    vae, unet, text, controlnet = parts["vae"], parts["unet"], parts["text"], parts["controlnet"]
    prompts = encode_prompts(text, ["T2w"])
    with pytest.raises(ConfigError, match="a mask conditions the image only through a ControlNet"):
        sample(vae, unet, None, prompts, torch.zeros(1, 1, 32, 32, dtype=torch.long), steps=2)
    with pytest.raises(ConfigError, match=r"mask must be \(B=1, 1, \*spatial\)"):
        sample(vae, unet, controlnet, prompts, torch.zeros(2, 1, 32, 32, dtype=torch.long), steps=2)
    with pytest.raises(ConfigError, match=r"latent size \[16, 16\] but the UNet was trained on \[8, 8\]"):
        sample(vae, unet, None, prompts, image_shape=(64, 64), steps=2)
    with pytest.raises(ConfigError, match="2 seeds for 1 prompts"):
        sample(vae, unet, None, prompts, seed=[1, 2], steps=2)
