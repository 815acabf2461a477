"""``train_controlnet``: MRGen's unpaired source -> target recipe on a frozen LDM; the ControlNet learns from masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.generative_bundles import save_ldm_bundle
from support.prepared_clip import quick_trainer
from support.prepared_generation import write_generation_prepared

from radlens.errors import ConfigError, InputError
from radlens.models.components import weights_digest
from radlens.models.controlnet import controlnet_for
from radlens.models.generator import GenerativeParts, load_generator, load_part
from radlens.models.sampling import sample
from radlens.train.config import OptimConfig
from radlens.train.controlnet import train_controlnet
from radlens.train.diffusion_task import ControlNetTask
from radlens.train.generative_config import GenerationDataConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_generation_prepared(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def ldm(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_ldm_bundle(tmp_path_factory.mktemp("ldm") / "ldm", prepared)


def _train(prepared: Path, ldm: Path | None, out: Path, **changes: object) -> Path:
    kwargs = dict(ldm=None if ldm is None else str(ldm), data=GenerationDataConfig(batch_size=8),
                  optim=OptimConfig(lr=1e-2, warmup_steps=2, weight_decay=0.0),
                  trainer=quick_trainer(max_steps=16, val_every_n_steps=8, checkpoint_every_n_steps=8))
    return train_controlnet(str(prepared), str(out), **{**kwargs, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cn_run(prepared: Path, ldm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(prepared, ldm, tmp_path_factory.mktemp("run") / "cn")


def test_the_bundle_is_the_frozen_ldm_plus_a_controlnet(cn_run: Path, ldm: Path) -> None:
    index = json.loads((cn_run / "best" / "bundle.json").read_text())
    assert index["components"] == {"vae": "autoencoder_kl", "unet": "diffusion_unet", "text": "minilm", "controlnet": "mask_controlnet"}
    facts = index["extra"]["controlnet"]
    assert facts["source"] == ["T1w"] and facts["target"] == ["T2w"] and facts["labels"]["4"] == "lesion"
    assert index["extra"]["train_items"] == {"source": 16, "target": 16}
    unet = load_part(ldm, "unet")
    assert facts["unet_sha256"] == weights_digest(unet) == weights_digest(load_part(cn_run, "unet"))  # the UNet stayed frozen
    gen = load_generator(cn_run, ldm=ldm)
    assert gen.controlnet is not None and gen.controlnet.config["num_labels"] == 5
    assert gen.controlnet.config["conditioning_channels"] == [16, 32, 96] and gen.controlnet.config["in_channels"] == 4
    assert gen.prompts is not None and gen.prompts.parts == load_generator(ldm).prompts.parts  # the LDM's template
    last = torch.load(cn_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert {k.split(".")[1] for k in last["state_dict"]} == {"controlnet"}


def test_the_controlnet_learns_and_the_mask_steers_the_image(cn_run: Path, ldm: Path, prepared: Path) -> None:
    from radlens.data.generation import GenerationDataset, ItemSource
    from radlens.data.generation_prompts import PromptBuilder

    gen = load_generator(cn_run)
    assert gen.controlnet is not None and gen.prompts is not None
    from radlens.io.prepared import PreparedDataset

    ds = PreparedDataset(prepared)
    val = GenerationDataset(ds, "validation", [ItemSource(("T1w",), "masked"), ItemSource(("T2w",), "empty")],
                            PromptBuilder(ds, gen.prompts))
    batch = torch.utils.data.default_collate([val[i] for i in range(len(val))])

    def loss(controlnet: torch.nn.Module) -> float:
        task = ControlNetTask(GenerativeParts({"vae": gen.vae, "unet": gen.unet, "text": gen.text, "controlnet": controlnet}))
        with torch.no_grad():
            return float(task.step(batch, "val").loss)

    initial = loss(controlnet_for(gen.unet, 4, 5))  # the copy of the UNet it started from: the UNet's own loss
    trained = loss(gen.controlnet)
    print(f"fixed-noise validation loss: initial {initial:.3f}, trained {trained:.3f}")
    assert trained < 0.9 * initial, (trained, initial)
    masks = batch["mask"][:2]
    prompts = gen.encode([gen.prompt("T2w", ["CSF", "GM", "WM"], plane="axial", body_part="brain")] * 2)
    with_masks = sample(gen.vae, gen.unet, gen.controlnet, prompts, masks, seed=[5, 5], steps=3)
    empty = sample(gen.vae, gen.unet, gen.controlnet, prompts, torch.zeros_like(masks), seed=[5, 5], steps=3)
    assert not torch.allclose(with_masks, empty, atol=1e-4) and not torch.allclose(with_masks[0], with_masks[1], atol=1e-4)


def test_bad_inputs_fail_before_training(prepared: Path, ldm: Path, cn_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--ldm .* is required"):
        _train(prepared, None, tmp_path / "a")
    with pytest.raises(ConfigError, match=r"source \['T1w'\] and target \['T1w', 'T2w'\] overlap"):
        _train(prepared, ldm, tmp_path / "b", target=["T1w", "T2w"])
    with pytest.raises(InputError, match="no train slices for contrast FLAIR \\(with a mask\\).*classes in the dataset: T1w, T2w"):
        _train(prepared, ldm, tmp_path / "c", source=["FLAIR"])
    with pytest.raises(InputError, match="is a ControlNet bundle"):
        _train(prepared, cn_run, tmp_path / "d")
    unlabelled = write_generation_prepared(tmp_path / "unlabelled", patients={"train": 2})
    card = json.loads((unlabelled / "dataset.json").read_text())
    (unlabelled / "dataset.json").write_text(json.dumps({**card, "labels": {"0": "background"}}))
    with pytest.raises(InputError, match="has no mask labels"):
        _train(unlabelled, ldm, tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abcde")
