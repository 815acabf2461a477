"""TE/TR/TI binning: MR-CLIP's bins and interval file, open-ended edges, quantile bins, round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from radlens.errors import ConfigError, InputError
from radlens.prepare.binning import (
    TI_EDGES,
    Binner,
    BinningConfig,
    add_bins,
    binners,
    intervals_json,
    read_intervals,
    write_intervals,
)


def default_binners() -> tuple[Binner, Binner, Binner]:
    b = binners(BinningConfig())
    return b["EchoTime"], b["RepetitionTime"], b["InversionTime"]


def test_interval_json_has_mrclip_shape_and_text() -> None:
    te, tr, ti = default_binners()
    data = intervals_json(te, tr, ti)
    assert list(data) == ["Echo Time", "Repetition Time", "Inversion Time"]
    assert data["Echo Time"][:3] == [
        {"bin": 1, "range": "0.000 - 0.010"},
        {"bin": 2, "range": "0.010 - 0.020"},
        {"bin": 3, "range": "0.020 - 0.030"},
    ]
    assert data["Echo Time"][-1] == {"bin": 20, "range": "0.190 - 0.200"}
    assert data["Repetition Time"][0] == {"bin": 1, "range": "0.000 - 0.500"}
    assert len(data["Repetition Time"]) == 20
    assert len(data["Inversion Time"]) == 8
    assert data["Inversion Time"][-1] == {"bin": 8, "range": ">2.500"}


def test_bins_are_right_closed_and_open_ended_like_mrclip_says() -> None:
    te, tr, ti = default_binners()
    assert te.assign(0.01) == 1  # (0.000, 0.010]
    assert te.assign(0.0100001) == 2
    assert te.assign(0.03) == 3  # exact decimal edges, no float drift
    assert te.assign(0.0) == 1  # first bin is open below
    assert tr.assign(12.0) == 20  # last bin is open above
    assert tr.assign(2.3) == 5
    assert ti.assign(0.15) == 2  # STIR
    assert ti.assign(0.9) == 4  # MPRAGE 3 T
    assert ti.assign(2.8) == 8  # 3 T FLAIR
    assert te.assign(None) is None and te.assign(float("nan")) is None
    with pytest.raises(InputError, match="negative"):
        te.assign(-0.01)


def test_assign_many_matches_assign_and_keeps_missing() -> None:
    te, _, _ = default_binners()
    values = pd.Series([0.005, None, 0.08, np.nan, 0.5], index=[10, 11, 12, 13, 14])
    out = te.assign_many(values)
    assert out.dtype == "Int64" and list(out.index) == [10, 11, 12, 13, 14]
    assert out.tolist() == [1, pd.NA, 8, pd.NA, 20]
    assert [te.assign(v) for v in [0.005, 0.08, 0.5]] == [1, 8, 20]


def test_write_then_read_round_trips_including_quantile_edges(tmp_path) -> None:
    te, tr, ti = default_binners()
    fitted = tr.fit([0.4, 0.55, 0.55, 2.0, 2.31, 4.5, 6.0, 9.0, 12.0])
    path = write_intervals(tmp_path / "sub" / "bin_intervals_et_20_rt_20.json", te, fitted, ti)
    assert read_intervals(path) == (te, fitted, ti)
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary left behind
    assert json.loads(path.read_text())["Echo Time"][0]["range"] == "0.000 - 0.010"


def test_reads_an_mrclip_style_file(tmp_path) -> None:
    path = tmp_path / "bins.json"
    path.write_text(json.dumps({
        "Echo Time": [{"bin": 1, "range": "0.000 - 0.010"}, {"bin": 2, "range": ">0.010"}],
        "Repetition Time": [{"bin": 1, "range": "0.000 - 0.500"}, {"bin": 2, "range": "0.500 - 1.000"}],
        "Inversion Time": [{"bin": 1, "range": "0.000 - 2.500"}, {"bin": 2, "range": ">2.500"}],
    }))
    te, tr, ti = read_intervals(path)
    assert te.edges == (0.0, 0.01, math.inf)
    assert te.assign(0.5) == 2 and tr.assign(3.0) == 2 and ti.assign(1.0) == 1


@pytest.mark.parametrize(
    "content, reason",
    [
        ("not json", "cannot read"),
        (json.dumps({"Echo Time": []}), "lack"),
        (json.dumps({k: [{"bin": 1, "range": "0.1 - 0.2"}, {"bin": 2, "range": "0.3 - 0.4"}]
                     for k in ("Echo Time", "Repetition Time", "Inversion Time")}), "previous bin ended"),
        (json.dumps({k: [{"bin": 2, "range": "0.1 - 0.2"}] for k in ("Echo Time", "Repetition Time", "Inversion Time")}),
         "numbered"),
    ],
)
def test_bad_interval_files_name_the_file(tmp_path, content: str, reason: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=reason) as err:
        read_intervals(path)
    assert str(path) in str(err.value)


def test_quantile_method_fits_te_tr_on_the_table_and_keeps_ti_fixed() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"EchoTime": rng.uniform(0.002, 0.12, 400), "RepetitionTime": rng.uniform(0.005, 9, 400)})
    b = binners(BinningConfig(te_bins=4, tr_bins=5, method="quantile"), table)
    assert b["EchoTime"].n_bins == 4 and b["RepetitionTime"].n_bins == 5
    counts = b["EchoTime"].assign_many(table["EchoTime"]).value_counts()
    assert counts.min() >= 95  # about a quarter each
    assert b["InversionTime"].edges == TI_EDGES
    with pytest.raises(ConfigError):
        binners(BinningConfig(method="quantile"))
    # Ties collapse: three distinct values cannot make 20 bins.
    assert Binner.equal(20, 0, 10).fit([1.0, 1.0, 2.0, 3.0]).n_bins < 20
    assert Binner.equal(20, 0, 10).fit([2.0, 2.0]).assign(2.0) == 1


def test_add_bins_adds_nullable_bin_columns() -> None:
    table = pd.DataFrame({"EchoTime": [0.08, None], "RepetitionTime": [4.5, 0.6], "InversionTime": [None, 2.0]})
    out = add_bins(table, binners(BinningConfig()))
    assert out["TE_bin"].tolist() == [8, pd.NA]
    assert out["TR_bin"].tolist() == [9, 2]
    assert out["TI_bin"].tolist() == [pd.NA, 7]
    assert out["TI_bin"].dtype == "Int64"
    assert "TE_bin" not in table


@pytest.mark.parametrize(
    "kwargs",
    [dict(te_bins=0), dict(tr_range=(5.0, 1.0)), dict(ti_edges=(0.0, 1.0, 0.5)), dict(method="kmeans")],
)
def test_bad_binning_configs_are_rejected(kwargs) -> None:
    with pytest.raises(ConfigError):
        BinningConfig(**kwargs)
