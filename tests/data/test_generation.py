"""Image + mask + prompt items and MRGen-shaped prompts over prepared datasets (a hand-written one and the MRI phantom)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_generation import LABELS, write_generation_prepared
from support.stand_in import stand_in_trainer

from radlens.data.generation import GenerationDataset, ItemSource
from radlens.data.generation_prompts import PromptBuilder, PromptConfig, PromptTemplate
from radlens.data.modules import GenerationDataModule
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return PreparedDataset(write_generation_prepared(tmp_path_factory.mktemp("gen")))


@pytest.fixture(scope="module")
def builder(prepared: PreparedDataset) -> PromptBuilder:
    return PromptBuilder(prepared, PromptTemplate.from_config(PromptConfig()))


def test_prompts_have_mrgens_parts_from_metadata_and_mask_labels(builder: PromptBuilder) -> None:
    t1 = builder.prompt("sub-001_T1w", [0, 1, 2, 3])
    assert t1 == ("T1w brain MRI, fat high signal, water low signal, fat bright, water dark, white matter brighter than grey "
                  "matter, TE 12 ms, TR 500 ms, axial brain, cerebrospinal fluid, grey matter, white matter")
    t2 = builder.prompt("sub-001_T2w", [4, 2])  # label order, renamed by the table; no TI on a spin echo: part dropped
    assert t2.startswith("T2w brain MRI, fat high signal, water high signal") and t2.endswith("TR 4500 ms, axial brain, grey matter, lesion")
    assert "TI" not in t2 and builder.prompt("sub-001_T2w").endswith("axial brain")  # no structure: no structures part
    common = {"inversion_time": None, "flip_angle": "90", "modality": "MRI", "body_part": "brain"}
    assert builder.typical_fields(["sub-001_T1w", "sub-002_T1w", "sub-001_T2w"]) == {
        "T1w": {"echo_time": "12", "repetition_time": "500", **common}, "T2w": {"echo_time": "100", "repetition_time": "4500", **common}}
    template = builder.template
    assert PromptTemplate.from_dict(json.loads(json.dumps(template.to_dict()))) == template  # travels in bundles
    assert template.render({"contrast": "FLAIR", "modality": "MRI", "body_part": "brain", "inversion_time": 2500.0,
                            "structures": ["WM"]}) == ("FLAIR brain MRI, water signal suppressed, cerebrospinal fluid dark, "
                                                       "fat high signal, lesions and oedema bright, grey matter brighter than "
                                                       "white matter, TI 2500 ms, white matter")


def test_a_template_field_the_dataset_lacks_is_a_config_error_naming_it(prepared: PreparedDataset, tmp_path: Path) -> None:
    def template(*parts: str, attributes: str | None = None) -> PromptTemplate:
        return PromptTemplate.from_config(PromptConfig(template=list(parts), attributes=attributes))

    with pytest.raises(ConfigError, match="'field_strength'.*no 'MagneticFieldStrength' column"):
        PromptBuilder(prepared, template("{contrast} MRI", "{field_strength} T"))
    with pytest.raises(ConfigError, match=r"field\(s\) 'organs' unknown; known: contrast"):
        template("{organs}")
    unlabelled = tmp_path / "unlabelled"
    write_generation_prepared(unlabelled, patients={"train": 1})
    card = json.loads((unlabelled / "dataset.json").read_text())
    (unlabelled / "dataset.json").write_text(json.dumps({**card, "labels": {}}))
    with pytest.raises(ConfigError, match="'structures' needs mask labels"):
        PromptBuilder(PreparedDataset(unlabelled), template("{contrast}", "{structures}"))
    PromptBuilder(PreparedDataset(unlabelled), template("{contrast}"))  # fine without the field
    # A contrast the attributes table lacks; a user's own table; an unreadable one.
    table = tmp_path / "t1only.yaml"
    table.write_text("attributes:\n  T1w: fat bright\nstructures:\n  GM: cortex\n")
    own = PromptBuilder(prepared, template("{contrast}", "{attributes}", "{structures}", attributes=str(table)))
    assert own.prompt("sub-001_T1w", [2]) == "T1w, fat bright, cortex"
    with pytest.raises(ConfigError, match="no entry for contrast.*T2w.*--prompts.attributes"):
        GenerationDataset(prepared, "train", prompts=own)
    (tmp_path / "bad.yaml").write_text("attributes: [T1w]\n")
    with pytest.raises(InputError, match="bad.yaml: an attributes table is a mapping"):
        template("{contrast}", attributes=str(tmp_path / "bad.yaml"))


def test_sources_choose_slices_and_what_their_mask_is(prepared: PreparedDataset, builder: PromptBuilder) -> None:
    source, target = ItemSource(("T1w",), "masked"), ItemSource(("T2w",), "empty")
    ds = GenerationDataset(prepared, "train", [source, target], builder)
    assert len(ds) == 4 * 2 * 4 and ds.series_ids[0].endswith("_T1w") and ds.series_ids[-1].endswith("_T2w")
    lesion_t1 = next(i for i in range(16) if 4 in ds[i]["mask"].unique().tolist())
    item = ds[lesion_t1]
    assert item["image"].shape == item["mask"].shape == (1, 32, 32) and item["mask"].dtype == torch.int64
    assert set(item["mask"].unique().tolist()) == {0, 1, 2, 3, 4} and item["prompt"].startswith("T1w brain MRI")
    assert item["prompt"].endswith("cerebrospinal fluid, grey matter, white matter, lesion")
    empty = ds[16 + lesion_t1]  # the same anatomy in T2w: its mask is left out and no structure is named
    assert not empty["mask"].any() and empty["prompt"].startswith("T2w brain MRI") and empty["prompt"].endswith("axial brain")
    assert (empty["image"][item["mask"] == 1].mean() > item["image"][item["mask"] == 1].mean() + 0.5)  # CSF bright in T2w
    with pytest.raises(InputError, match="no train slices for contrast FLAIR.*contrast classes in the dataset: T1w, T2w"):
        GenerationDataset(prepared, "train", [ItemSource(("FLAIR",))])
    assert len(GenerationDataset(prepared, "validation", [ItemSource(("FLAIR",))], require_each=False)) == 0


def test_prompt_dropout_is_drawn_per_item_and_epoch(prepared: PreparedDataset, builder: PromptBuilder) -> None:
    ds = GenerationDataset(prepared, "train", prompts=builder, prompt_dropout=0.3, seed=5)
    epochs = [[ds[(i, e)]["prompt"] for i in range(len(ds))] for e in range(6)]
    dropped = np.array([[p == "" for p in prompts] for prompts in epochs])
    assert 0.15 < dropped.mean() < 0.45 and dropped.any(axis=0).sum() > dropped.shape[1] // 2
    assert epochs[2] == [ds[(i, 2)]["prompt"] for i in range(len(ds))]  # the same draw again (resume)
    assert all(ds[i]["prompt"] for i in range(len(ds)))  # evaluation keys never drop
    with pytest.raises(ConfigError, match="prompt dropout must be in"):
        GenerationDataset(prepared, "train", prompt_dropout=1.0)


def test_the_data_module_batches_items_and_records_the_labels(prepared: PreparedDataset, builder: PromptBuilder) -> None:
    module = GenerationDataModule(prepared, [ItemSource()], batch_size=4, prompts=builder, prompt_dropout=0.1, seed=1)
    module.trainer = stand_in_trainer()  # type: ignore[assignment]
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == batch["mask"].shape == (4, 1, 32, 32) and len(batch["prompt"]) == 4
    assert module.val_set is not None and len(module.val_set) == 8
    val = next(iter(module.val_dataloader()))
    assert val["index"].tolist() == [0, 1, 2, 3] and all(val["prompt"])
    assert module.preprocessing()["labels"] == {str(k): v for k, v in LABELS.items()}
    assert module.preprocessing()["array_shape"] == [32, 32]


def test_slices_without_masks_are_items_with_unknown_masks(tmp_path: Path) -> None:
    root = write_generation_prepared(tmp_path / "nomask", patients={"train": 1})
    slices = pd.read_parquet(root / "slices.parquet")
    slices.drop(columns=["mask_path", "boxes", "labels_present"]).to_parquet(root / "slices.parquet", index=False)
    ds = GenerationDataset(root, "train")
    assert len(ds) == 8 and (ds[0]["mask"] == -1).all() and ds[0]["prompt"] == ""
    with pytest.raises(InputError, match="no train slices for contrast T1w \\(with a mask\\)"):
        GenerationDataset(root, "train", [ItemSource(("T1w",), "masked")])


def test_prompts_from_a_prepared_mri_phantom(tmp_path: Path) -> None:
    """The typed metadata the BIDS importer writes (contrast class, TE/TR, plane) and the card's anatomy."""
    from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom
    from radlens.prepare.pipeline import default_config, prepare_dataset
    from radlens.prepare.slicing import SliceConfig

    cfg = MRIPhantomConfig(subjects=1, seed=2, series_per_subject=2, resolution=4, sequences=("T1_SE", "FLAIR"),
                           lesion_probability=1.0)
    truth = generate_mri_phantom(tmp_path / "raw", cfg)
    base = default_config("bids")
    ds = prepare_dataset("bids", tmp_path / "raw", tmp_path / "prep",
                         dataclasses.replace(base, slicing=SliceConfig(slice_shape=(16, 16), every=4)))
    builder = PromptBuilder(ds, PromptTemplate.from_config(PromptConfig()))
    for row in ds.series.itertuples():
        prompt = builder.prompt(row.series_id)
        contrast = truth.set_index("series").loc[row.series_id, "contrast"]
        assert prompt.startswith(f"{contrast} brain MRI, ") and f", {row.plane} brain" in prompt
        assert f"TE {float(row.EchoTime) * 1000:.0f} ms" in prompt
        assert ("TI " in prompt) == (contrast == "FLAIR")  # inversion time only where the sequence has one
    names = [n for k, n in sorted(ds.labels.items()) if k > 0]
    assert builder.prompt(ds.series["series_id"].iat[0], range(1, len(names) + 1)).endswith(builder.template.structure_words(names))
