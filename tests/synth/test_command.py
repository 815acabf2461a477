"""``radlens synth``: a prepared dataset of filtered candidates with their seeds and scores, readable by every
command, resumable after an interruption, sharded into one output, with bad inputs refused before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_clip import quick_trainer
from support.prepared_generation import write_generation_prepared
from support.synth_bundles import save_controlnet_bundle, save_segmenter_bundle

from radlens.cli import main
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset
from radlens.synth import generate as generate_module
from radlens.synth.command import SynthSummary, synthesize
from radlens.synth.filter import FilterConfig
from radlens.synth.generate import SamplerConfig

# Everything passes (an untrained segmenter agrees little): the kept ones are the best 2 of 3 by mean IoU.
OPEN = FilterConfig(label_threshold=0.0, mean_threshold=0.0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    prepared = write_generation_prepared(root / "prep", patients={"train": 2, "validation": 1, "test": 1}, slices_per_series=3)
    return {"prepared": prepared, "cn": save_controlnet_bundle(root / "cn", prepared),
            "seg": save_segmenter_bundle(root / "seg", prepared)}


def _synth(inputs: dict[str, Path], out: Path, **changes: Any) -> SynthSummary:
    kwargs: dict[str, Any] = dict(segmenter=inputs["seg"], candidates=3, keep=2, filter=OPEN,
                                  sampler=SamplerConfig(steps=2, batch_size=6), device="cpu")
    return synthesize(inputs["cn"], inputs["prepared"], out, **{**kwargs, **changes})


@pytest.fixture(scope="module")
def full(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full") / "out"
    _synth(inputs, out)
    return out


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for sub in ("arrays", "masks") for p in sorted((folder / sub).glob("*.npy"))}


def test_the_output_is_a_prepared_dataset_with_seeds_prompts_and_scores(full: Path, inputs: dict[str, Path]) -> None:
    from radlens.models.generator import load_generator
    from radlens.models.sampling import sample

    source, ds = PreparedDataset(inputs["prepared"]), PreparedDataset(full)
    assert ds.dims == 2 and ds.labels == source.labels and ds.card["array_shape"] == [32, 32]
    assert ds.card["source"]["kind"] == "synth" and ds.card["config"] == source.card["config"]
    synth = ds.card["synth"]
    assert synth["contrast"] == "T2w" and synth["source_contrasts"] == ["T1w"] and synth["candidates"] == 3
    assert synth["counts"] == {"masks": 9, "skipped_near_empty": 0, "masks_by_level": {"level 0": 9}, "kept": 18}
    # Two ranks per source T1w series of the train and validation patients; patients keep their splits.
    assert sorted(ds.series["series_id"]) == sorted(f"sub-00{p}_T1w_synth-T2w-r{r}" for p in (1, 2, 3) for r in (0, 1))
    assert (ds.series["contrast"] == "T2w").all() and ds.series["EchoTime"].eq(0.1).all()
    splits = source.series.set_index("patient_id")["split"].to_dict()
    assert all(splits[p] == s for p, s in zip(ds.slices["patient_id"], ds.slices["split"]))
    assert "sub-004" not in set(ds.slices["patient_id"])  # the test patient stays held out
    # Every image is conditioned on its source slice's mask, which is its label map.
    for i, row in ds.slices.iterrows():
        assert np.array_equal(ds.slice_mask(i), source.slice_mask(row["source_slice_id"]))
    row = ds.slices.iloc[0]
    assert row["prompt"].startswith("T2w brain MRI, fat high signal")
    assert row["prompt"].endswith("axial brain, cerebrospinal fluid, grey matter, white matter")
    assert row["filter_level"] == 0 and row["filter_mean_threshold"] == 0.0
    scores = json.loads(row["agreement"])
    assert set(scores) == {"CSF", "GM", "WM"} and row["agreement_mean_iou"] == pytest.approx(np.mean([s["iou"] for s in scores.values()]), abs=1e-5)
    # The kept ones are the best two of each mask's three candidates by mean IoU, all recorded.
    cands = pd.read_parquet(full / "extras" / "candidates.parquet")
    assert len(cands) == 27 and cands.groupby("source_slice_id").size().eq(3).all()
    for _, group in cands.groupby("source_slice_id"):
        best = group.sort_values(["mean_iou", "candidate"], ascending=[False, True])["candidate"].tolist()[:2]
        assert group.set_index("candidate").loc[best, "kept_rank"].tolist() == [0, 1]
    # The recorded seed, prompt and mask reproduce the stored image.
    gen = load_generator(inputs["cn"])
    mask = torch.from_numpy(np.asarray(ds.slice_mask(0), np.int64))[None, None]
    image = sample(gen.vae, gen.unet, gen.controlnet, gen.encode([row["prompt"]]), mask, seed=[int(row["seed"])], steps=2)
    assert np.allclose(image.clamp(0, 1)[0, 0].numpy(), ds.slice(0), atol=1e-5)


def test_train_seg_and_export_nnunet_read_the_output(full: Path, tmp_path: Path) -> None:
    from radlens.prepare.exporters.nnunet import nnunet
    from radlens.train.seg import SegDataConfig, train_seg

    run = train_seg(str(full), str(tmp_path / "seg"), data=SegDataConfig(batch_size=4), trainer=quick_trainer(max_steps=2))
    assert (run / "best" / "bundle.json").is_file()
    assert nnunet(full, tmp_path / "raw", dataset_id=7, name="Synth") == 0
    dataset = json.loads((tmp_path / "raw" / "Dataset007_Synth" / "dataset.json").read_text())
    assert dataset["numTraining"] == 18 and dataset["labels"]["background"] == 0


def test_an_interrupted_run_finishes_without_redoing_kept_samples(full: Path, inputs: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    original, seen = generate_module.generate, []

    def dies_on_the_second_batch(generator: Any, jobs: Any, *args: Any, **kwargs: Any) -> Any:
        if len(seen) == 1:
            raise KeyboardInterrupt
        seen.append([j.seeds for j in jobs])
        return original(generator, jobs, *args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(generate_module, "generate", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _synth(inputs, out)
    assert not (out / "dataset.json").exists() and len(list((out / "work").glob("*.json"))) == 2  # 2 masks per batch of 6
    monkeypatch.setattr(generate_module, "generate", original)
    again = _synth(inputs, out)
    assert (again.reused, again.generated) == (2, 7)
    written, expected = _arrays(out), _arrays(full)
    assert written.keys() == expected.keys() and all(np.array_equal(written[k], expected[k]) for k in expected)
    assert _synth(inputs, out).generated == 0  # finished: nothing left to do


def test_shards_write_one_dataset_into_one_folder(full: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ["--segmenter", str(inputs["seg"]), "--candidates", "3", "--filter.label_threshold", "0", "--filter.mean_threshold", "0",
              "--sampler.steps", "2", "--sampler.batch_size", "6", "--device", "cpu"]
    assert main(["synth", str(inputs["cn"]), str(inputs["prepared"]), str(out), "--shard", "1/2", *common]) == 0
    assert not (out / "dataset.json").exists()
    first = _synth(inputs, out, shard="0/2")
    assert first.card is not None and (first.mine, first.generated) == (4, 4)
    written, expected = _arrays(out), _arrays(full)
    assert written.keys() == expected.keys() and all(np.array_equal(written[k], expected[k]) for k in expected)


def test_unfiltered_synthesis_keeps_the_first_candidates(inputs: dict[str, Path], tmp_path: Path) -> None:
    summary = _synth(inputs, tmp_path / "out", segmenter=None, select="first", keep=1, splits=["train"])
    ds = PreparedDataset(tmp_path / "out")
    assert summary.card is not None and summary.card["synth"]["candidates"] == 1 and len(ds.slices) == 6
    assert (ds.slices["filter_level"] == -1).all() and ds.slices["agreement"].isna().all() and (ds.slices["candidate"] == 0).all()


def test_bad_inputs_are_refused_before_any_work(inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the agreement filter needs --segmenter"):
        _synth(inputs, tmp_path / "a", segmenter=None)
    with pytest.raises(ConfigError, match=r"candidates \(1\) must be >= keep \(2\)"):
        _synth(inputs, tmp_path / "b", candidates=1)
    with pytest.raises(ConfigError, match="--contrast 'FLAIR': the generator .* knows T2w"):
        _synth(inputs, tmp_path / "c", contrast="FLAIR")
    ldm = inputs["cn"].parent / "cn-ldm"  # the LDM bundle the ControlNet bundle was made from
    with pytest.raises(InputError, match="has no ControlNet"):
        synthesize(ldm, inputs["prepared"], tmp_path / "d", segmenter=inputs["seg"])
    other = write_generation_prepared(tmp_path / "small", shape=(16, 16), patients={"train": 1})
    with pytest.raises(InputError, match=r"slices of shape \[16, 16\], but the generator .* makes \[32, 32\] images"):
        _synth({**inputs, "prepared": other}, tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abcde")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(InputError, match="holds files radlens synth did not write"):
        _synth(inputs, tmp_path / "mine")
    with pytest.raises(InputError, match="no candidate passed the filter for any of the 2 masks"):
        _synth(inputs, tmp_path / "f", filter=FilterConfig(label_threshold=1.5, mean_threshold=1.5), limit=2)
