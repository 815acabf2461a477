"""Prompt files: the packaged prompt sets, pairs and classes files, caption-field prompts, bad files refused."""

from __future__ import annotations

import pytest
from support.bad_files import assert_refused

from radlens.errors import InputError
from radlens.models.prompts import load_class_prompts, load_prompts
from radlens.prepare.captions import CaptionConfig, render

CTRATE_ORDER = [
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
]


def test_packaged_prompt_sets():
    ct = load_prompts("ctrate")
    assert list(ct.findings) == CTRATE_ORDER
    assert ct.present[2] == ("Cardiomegaly is present.",) and ct.absent[2] == ("Cardiomegaly is not present.",)
    mri = load_prompts("mri_contrast")
    assert list(mri.findings) == ["T1w", "T2w", "PDw", "FLAIR", "T2*w", "STIR"]
    assert "A T1-weighted MRI." in mri.present[0] and len(mri.absent[0]) == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: x\n", "missing field 'findings'"),
        ("findings:\n  A: {present: [A is here.]}\n", "no 'absent' prompts"),
        ("findings:\n  A: {present: []}\ntemplate: {absent: [no]}\n", "non-empty list"),
        ("findings:\n  A: {}\ntemplate: {present: [a], absent: [b]}\nextra: 1\n", "unknown field"),
        ("findings:\n  A: {prompt: a}\n", "expected a mapping"),
        ("findings: [A\n", "not valid YAML"),
    ],
)
def test_bad_prompt_files(tmp_path, text, reason):
    assert_refused(load_prompts, tmp_path / "p.yaml", text, reason)


def test_mode_pairs_is_the_default_and_a_classes_file_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("mode: pairs\ntemplate: {present: ['{finding} here.'], absent: ['no {finding}.']}\nfindings: {A: {}}\n")
    assert load_prompts(path).present == (("A here.",),)
    with pytest.raises(InputError, match="a 'mode: classes' prompt file"):
        load_prompts("mri_contrast_captions")


def test_packaged_caption_prompts_follow_the_caption_template():
    prompts = load_class_prompts("mri_contrast_captions")
    assert list(prompts.classes) == ["T1w", "T2w", "PDw", "FLAIR", "T2*w", "STIR"]
    assert all(2 <= len(p) <= 3 for p in prompts.prompts)
    assert prompts.prompts[0][0] == render({"anatomy": "brain", "SeriesDescription": "t1_se_tra"})
    assert prompts.prompts[0][1].endswith("(NONE, SE, SK_SP), Imaging Parameters (Echo Time, Repetition Time, "
                                          "Inversion Time, Flip Angle): (0.012, 0.5, NONE, 90)")
    assert all("plane NONE" in t and "(NONE, NONE, NONE)" in t for p in prompts.prompts for t in p)
    assert len({t for p in prompts.prompts for t in p}) == sum(len(p) for p in prompts.prompts)
    in_ms = load_class_prompts("mri_contrast_captions", CaptionConfig(time_unit="ms", anatomy="head"))
    assert in_ms.prompts[3][2].startswith("A head MRI") and "(100, 9000, 2500, 90)" in in_ms.prompts[3][2]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mode: classes\nname: x\n", "missing field 'classes'"),
        ("mode: classes\nclasses:\n  A: [a]\n", "two or more"),
        ("mode: classes\nclasses:\n  A: []\n  B: [b]\n", "class 'A' must list"),
        ("mode: classes\nclasses:\n  A: [{fields: {EchoTme: 0.1}}]\n  B: [b]\n", r"unknown caption field\(s\) \['EchoTme'\]"),
        ("mode: classes\nclasses:\n  A: [{fields: {EchoTime: short}}]\n  B: [b]\n", "EchoTime must be a number"),
        ("mode: classes\nclasses:\n  A: [{fields: {}}]\n  B: [b]\n", "non-empty mapping"),
        ("mode: classes\nclasses:\n  A: [{text: a}]\n  B: [b]\n", "prompt 1: expected"),
        ("mode: classes\nclasses:\n  A: [same]\n  B: [same]\n", "'A' and 'B' have the same prompts"),
        ("mode: classes\nclasses: {A: [a], B: [b]}\nextra: 1\n", "unknown field"),
        ("mode: triples\nclasses: {A: [a], B: [b]}\n", "field 'mode'"),
        ("findings: {A: {}}\ntemplate: {present: [a], absent: [b]}\n", "not a 'mode: classes'"),
    ],
)
def test_bad_class_prompt_files(tmp_path, text, reason):
    assert_refused(load_class_prompts, tmp_path / "p.yaml", text, reason)
