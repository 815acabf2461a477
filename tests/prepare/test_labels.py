"""Protocol labels from typed columns: keys, deterministic ids, reuse across splits, distribution."""

from __future__ import annotations

import pandas as pd
import pytest

from radlens.errors import ConfigError
from radlens.io.metadata import AcquisitionMetadata
from radlens.prepare.binning import BinningConfig, add_bins, binners
from radlens.prepare.captions import make_caption
from radlens.prepare.labels import LabelConfig, assign_labels, label_distribution, protocol_keys

T2 = AcquisitionMetadata(
    Manufacturer="SIEMENS", ManufacturersModelName="Skyra", MagneticFieldStrength=3.0,
    ScanningSequence=("SE",), SequenceVariant=("SK", "SP"), MRAcquisitionType="2D",
    EchoTime=0.025, RepetitionTime=2.3, FlipAngle=90.0,
)


def table_of(records: list[tuple[str, str, AcquisitionMetadata]]) -> pd.DataFrame:
    rows = [{"patient_id": p, "plane": plane, **m.to_dict()} for p, plane, m in records]
    return add_bins(pd.DataFrame(rows), binners(BinningConfig()))


def test_key_is_readable_and_built_from_typed_fields() -> None:
    keys = protocol_keys(table_of([("p1", "axial", T2)]))
    assert keys.tolist() == ["axial|Siemens|SKYRA|3|SE|SK_SP|2D|90|TE3|TR5|TI-"]


def test_vendor_spellings_of_one_scanner_and_sequence_are_one_protocol() -> None:
    spellings = [
        T2,
        T2.replace(Manufacturer="Siemens Healthineers", ManufacturersModelName="SKYRA", MagneticFieldStrength=2.89),
        T2.replace(Manufacturer="SIEMENS HEALTHINEERS", MagneticFieldStrength=30000.0, FlipAngle=90.0000001),
        T2.replace(Manufacturer="Siemens", SequenceVariant=("SP", "SK"), MRAcquisitionType="2d"),
    ]
    table = table_of([(f"p{i}", "axial", m) for i, m in enumerate(spellings)])
    ids, names = assign_labels(protocol_keys(table))
    assert set(ids) == {0} and names == {0: "axial|Siemens|SKYRA|3|SE|SK_SP|2D|90|TE3|TR5|TI-"}
    assert table["Manufacturer"].tolist()[1] == "Siemens Healthineers"  # the stored columns keep what was written
    others = [T2.replace(Manufacturer="GE MEDICAL SYSTEMS", ManufacturersModelName="Avanto_fit"),
              T2.replace(Manufacturer="GE HealthCare", ManufacturersModelName="Avanto fit"),
              T2.replace(Manufacturer="Philips Medical Systems", MagneticFieldStrength=1.494)]
    keys = protocol_keys(table_of([(f"q{i}", "axial", m) for i, m in enumerate(others)]))
    assert keys.iloc[0] == keys.iloc[1] == "axial|GE|AVANTO FIT|3|SE|SK_SP|2D|90|TE3|TR5|TI-"
    assert keys.iloc[2].startswith("axial|Philips|SKYRA|1.5|")


def test_series_differing_only_in_te_bin_get_different_labels() -> None:
    # MR-CLIP parses labels back out of captions and its labels collapse to the plane; radlens
    # keys the typed fields, so a TE change that moves the bin changes the label.
    other_te = T2.replace(EchoTime=0.095)
    table = table_of([("p1", "axial", T2), ("p2", "axial", other_te), ("p3", "axial", T2.replace(EchoTime=0.022))])
    ids, names = assign_labels(protocol_keys(table))
    assert ids[0] != ids[1] and ids[0] == ids[2]
    assert names[int(ids[1])].endswith("|TE10|TR5|TI-")
    # The captions differ only in the TE text: nothing is parsed back from them.
    assert make_caption(T2, "axial").replace("0.025", "0.095") == make_caption(other_te, "axial")


def test_ids_are_deterministic_and_reuse_an_existing_mapping() -> None:
    keys = pd.Series(["b", "a", "c", "a"])
    ids, names = assign_labels(keys)
    assert ids.tolist() == [1, 0, 2, 0] and names == {0: "a", 1: "b", 2: "c"}
    assert assign_labels(keys.iloc[::-1])[1] == names  # order of rows does not matter
    existing = {key: i for i, key in names.items()}
    val_ids, val_names = assign_labels(pd.Series(["c", "z", "y", None], index=[5, 6, 7, 8]), existing)
    assert val_ids.to_dict() == {5: 2, 6: 4, 7: 3, 8: -1}
    assert val_names == {0: "a", 1: "b", 2: "c", 3: "y", 4: "z"}
    with pytest.raises(ConfigError):
        assign_labels(keys, {"a": 0, "b": 0})


def test_missing_values_and_custom_fields() -> None:
    table = table_of([("p1", "sagittal", AcquisitionMetadata(Manufacturer="GE", InversionTime=2.6))])
    assert protocol_keys(table).iloc[0] == "sagittal|GE|-|-|-|-|-|-|TE-|TR-|TI8"
    cfg = LabelConfig(fields=("plane", "Manufacturer"))
    assert protocol_keys(table, cfg).iloc[0] == "sagittal|GE"
    with pytest.raises(ConfigError, match="add_bins"):
        protocol_keys(pd.DataFrame({"plane": ["axial"]}), LabelConfig(fields=("plane", "TE_bin")))
    with pytest.raises(ConfigError):
        LabelConfig(fields=("plane", "plane"))


def test_key_parts_cannot_contain_the_separator() -> None:
    table = table_of([("p1", "axial", T2.replace(ManufacturersModelName="A|B"))])
    assert protocol_keys(table).iloc[0].split("|")[2] == "A/B"


def test_label_distribution_counts_series_patients_slices_and_splits() -> None:
    series = pd.DataFrame({
        "series_id": ["s1", "s2", "s3", "s4"],
        "patient_id": ["p1", "p1", "p2", "p3"],
        "label": [0, 0, 0, 1],
        "split": ["train", "train", "test", "train"],
    })
    slices = pd.DataFrame({"label": [0] * 7 + [1] * 2})
    dist = label_distribution(series, {0: "axial|a", 1: "axial|b"}, slices)
    assert list(dist.columns) == ["label", "key", "n_series", "n_patients", "n_slices", "n_series_test", "n_series_train"]
    assert dist.values.tolist() == [[0, "axial|a", 3, 2, 7, 1, 2], [1, "axial|b", 1, 1, 2, 0, 1]]
    with pytest.raises(ConfigError):
        label_distribution(series.drop(columns="label"))
