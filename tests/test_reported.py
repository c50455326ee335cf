"""kdlib.reported: the papers' numbers and per-pair hyper-parameters as data (kdlib/reported.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from kdlib import reported

CONTRACT = ["paper", "dataset", "teacher", "student", "method", "metric", "value", "source"]
PAPERS = {"sdd", "cd", "dcd", "rrd", "sskd", "ttm", "crd", "dkd"}
DATASETS = {"cifar100", "imagenet", "cub200", "stl10", "tinyimagenet"}
METRICS = {"top1", "top5", "top1_error", "top5_error"}
ZOO = {
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11",
    "vgg13", "vgg16", "vgg19", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152",
    "MobileNetV2", "ShuffleV1", "ShuffleV2",
}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return reported.load()


def value(**where) -> float:
    rows = reported.load(**where)
    assert len(rows) == 1, rows
    return rows["value"].item()


def test_contract_columns_and_types(df):
    assert set(CONTRACT + ["table", "notes"]) <= set(df.columns)
    assert len(df) > 400
    assert df["value"].dtype == float and df["value"].notna().all()
    assert df["value"].between(0, 100).all()
    for column in CONTRACT:
        if column != "value":
            assert df[column].map(lambda x: isinstance(x, str) and x != "").all(), column


def test_allowed_values(df):
    assert set(df["paper"]) <= PAPERS and set(df["paper"]) == PAPERS
    assert set(df["dataset"]) <= DATASETS
    assert set(df["metric"]) <= METRICS
    assert (df["method"] == df["method"].str.lower()).all()


def test_no_duplicate_cells(df):
    key = ["table", "teacher", "student", "method", "metric"]
    assert not df.duplicated(key).any(), df[df.duplicated(key, keep=False)]


def test_each_table_has_one_paper_and_dataset(df):
    per_table = df.groupby("table")[["paper", "dataset"]].nunique()
    assert (per_table == 1).all().all()
    assert all(t.startswith(p) for t, p in zip(df["table"], df["paper"]))


def test_cifar_models_are_zoo_names(df):
    cifar = df[df["dataset"] == "cifar100"]
    assert set(cifar["teacher"]) | set(cifar["student"]) <= ZOO


def test_unverified_numbers_say_so(df):
    flagged = df[df["notes"].str.contains("UNVERIFIED")]
    assert {"dcd", "rrd", "sskd", "sdd"} <= set(flagged["paper"])


@pytest.mark.parametrize(
    "where, expected",
    [
        (dict(table="crd_cifar100_same", teacher="resnet32x4", student="resnet8x4", method="teacher"), 79.42),
        (dict(table="crd_cifar100_cross", teacher="ResNet50", student="vgg8", method="crd+kd"), 74.58),
        (dict(table="sdd_cifar100_same_depth", teacher="resnet32x4", student="ShuffleV2", method="sd-dkd"), 78.05),
        (dict(table="sdd_cifar100_different_depth", teacher="ResNet50", student="ShuffleV1", method="kd"), 75.82),
        (dict(table="sdd_cub200", teacher="vgg13", student="MobileNetV2", method="sd-dkd"), 64.86),
        (dict(table="sdd_imagenet", student="MobileNetV1", method="sd-nkd", metric="top5"), 91.11),
        (dict(table="cd_cifar100", method="cd+gkd+edt"), 18.63),
        (dict(table="cd_imagenet", method="cd+gkd+edt", metric="top5_error"), 9.20),
        (dict(table="dcd_cifar100_cross", teacher="resnet32x4", student="ShuffleV1", method="dcd+kd"), 76.01),
        (dict(table="rrd_cifar100_same", teacher="resnet56", student="resnet20", method="rrd+kd"), 72.19),
        (dict(table="rrd_transfer_tinyimagenet", method="rrd"), 34.6),
        (dict(table="dkd_cifar100_same", teacher="wrn_40_2", student="wrn_16_2"), 76.23),
        (dict(table="ttm_cifar100_same", teacher="wrn_40_2", student="wrn_16_2", method="dkd"), 76.24),
        (dict(table="sskd_cifar100", teacher="ResNet50", student="vgg8", method="teacher"), 79.10),
        (dict(table="sskd_cifar100", teacher="resnet32x4", student="ShuffleV2", method="sskd"), 78.61),
        (dict(table="ttm_cifar100_cross", teacher="resnet32x4", student="ShuffleV1", method="wttm+itrd"), 77.03),
        (dict(table="ttm_imagenet", teacher="ResNet34", method="wttm"), 72.19),
        # copied from the RepDistiller README, table 1
        (dict(table="crd_cifar100_same", teacher="resnet32x4", student="resnet8x4", method="fsp"), 72.62),
        (dict(table="crd_cifar100_same", teacher="wrn_40_2", student="wrn_16_2", method="ab"), 72.50),
        (dict(table="crd_cifar100_same", teacher="vgg13", student="vgg8", method="nst"), 71.53),
        (dict(table="crd_cifar100_same", teacher="resnet110", student="resnet20", method="fitnet"), 68.99),
        # table 2
        (dict(table="crd_cifar100_cross", teacher="ResNet50", student="MobileNetV2", method="at"), 58.58),
        (dict(table="crd_cifar100_cross", teacher="resnet32x4", student="ShuffleV2", method="nst"), 74.68),
        (dict(table="crd_cifar100_cross", teacher="wrn_40_2", student="ShuffleV1", method="cc"), 71.38),
        # SSKD README, similar- and cross-architecture tables
        (dict(table="sskd_cifar100", teacher="wrn_40_2", student="wrn_16_2", method="ab"), 68.89),
        (dict(table="sskd_cifar100", teacher="resnet56", student="resnet20", method="at"), 71.78),
        (dict(table="sskd_cifar100", teacher="resnet32x4", student="ShuffleV1", method="ab"), 76.24),
        (dict(table="sskd_cifar100", teacher="vgg13", student="MobileNetV2", method="ft"), 69.19),
        # CD README, ImageNet top-5 errors
        (dict(table="cd_imagenet", method="teacher", metric="top5_error"), 8.74),
        (dict(table="cd_imagenet", method="fitnet", metric="top5_error"), 10.77),
        (dict(table="cd_imagenet", method="cd+gkd", metric="top5_error"), 9.41),
    ],
)
def test_known_values(where, expected):
    assert value(**where) == pytest.approx(expected)


def test_filters_accept_lists():
    rows = reported.load(table=["dcd_cifar100_same", "rrd_cifar100_same"], method=["dcd", "rrd"])
    assert len(rows) == 14 and set(rows["method"]) == {"dcd", "rrd"}


@pytest.mark.parametrize("bad", [dict(paper="kd"), dict(dataset="cifar10"), dict(method="KD"), dict(colour="x")])
def test_bad_filter_names_the_valid_choices(bad):
    with pytest.raises(ValueError, match="valid"):
        reported.load(**bad)


def test_pivot_shapes_a_table_as_printed():
    wide = reported.pivot(reported.load(table="crd_cifar100_same"))
    assert list(wide.index) == ["teacher", "student", *CRD_SAME_METHODS, "crd+kd"]  # the README's row order
    assert wide.columns[0] == "wrn_40_2→wrn_16_2" and wide.shape == (16, 7)
    assert wide.loc["teacher", "resnet32x4→resnet8x4"] == pytest.approx(79.42)
    assert pd.isna(wide.loc["fsp", "wrn_40_2→wrn_40_1"])  # "N/A" in the README


def test_pivot_adds_a_metric_level_and_refuses_clashes():
    wide = reported.pivot(reported.load(table="cd_imagenet"))
    assert wide.loc["cd+gkd+edt", ("ResNet34→ResNet18", "top5_error")] == pytest.approx(9.20)
    kd = reported.load(method="kd", dataset="cifar100")
    with pytest.raises(ValueError, match="same cell"):
        reported.pivot(kd)
    assert len(reported.pivot(kd, index=["table", "method"])) == kd["table"].nunique()


def test_pair_hparams_types():
    assert reported.pair_hparams("ttm", "resnet32x4", "resnet8x4") == {"gamma": 0.1, "beta": 100.0}
    assert reported.pair_hparams("ttm", "vgg13", "vgg8") == {"gamma": 0.1, "beta": 45.0}
    assert reported.pair_hparams("sd-kd", "resnet32x4", "resnet8x4") == {"M": (1, 2)}
    sd_dkd = reported.pair_hparams("sd-dkd", "resnet32x4", "ShuffleV1")
    assert sd_dkd == {"M": (1, 2, 4), "beta": 8.0} and isinstance(sd_dkd["M"][0], int)
    assert reported.pair_hparams("dkd", "resnet56", "resnet20")["beta"] == 2.0
    assert reported.pair_hparams("wttm", "ResNet50", "MobileNetV1", dataset="imagenet") == {"gamma": 0.7, "beta": 3.5}
    assert reported.pair_hparams("kd", "resnet32x4", "resnet8x4") == {}
    with pytest.raises(ValueError, match="valid"):
        reported.pair_hparams("ttm", "resnet32x4", "resnet8x4", dataset="cifar")


def test_pair_hparams_file_is_consistent():
    hp = pd.read_csv(reported._TABLES / "pair_hparams.csv", dtype=str, keep_default_na=False)
    assert list(hp.columns[:7]) == ["method", "teacher", "student", "dataset", "param", "value", "source"]
    assert not hp.duplicated(["method", "teacher", "student", "dataset", "param"]).any()
    assert set(hp["dataset"]) <= DATASETS
    cifar = hp[hp["dataset"] == "cifar100"]
    assert set(cifar["teacher"]) | set(cifar["student"]) <= ZOO
    for method, teacher, student, dataset in hp[["method", "teacher", "student", "dataset"]].drop_duplicates().values:
        assert reported.pair_hparams(method, teacher, student, dataset)


def test_tables_lists_every_table(df):
    listing = reported.tables()
    assert list(listing.columns) == ["table", "paper", "dataset", "rows", "source"]
    assert listing["rows"].sum() == len(df) and set(listing["table"]) == set(df["table"])
    row = listing.set_index("table").loc["ttm_cifar100_same"]
    assert (row["paper"], row["dataset"], row["rows"]) == ("ttm", "cifar100", 48 + 7 * 7)  # + the README's feature rows


# The README tables, complete: (a) as many rows as the README prints numbers, (b) spot values copied
# from the README, (c) no cell twice. A README cell without a number ("N/A") has no row.
KEY = ["table", "teacher", "student", "method", "metric"]
CRD_SAME_METHODS = ["kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd"]
CRD_CROSS_METHODS = [m for m in CRD_SAME_METHODS if m != "fsp"]
SSKD_METHODS = ["kd", "fitnet", "at", "sp", "vid", "rkd", "pkt", "ab", "ft", "crd", "sskd"]


@pytest.mark.parametrize(
    "table, readme_numbers, other_rows",
    [
        # RepDistiller README @b84f547, table 1: 7 pairs x (teacher, student + 13 methods), FSP wrn_40_2→wrn_40_1 "N/A";
        # + the CRD paper's CRD+KD row (7), which the RepDistiller README does not print
        ("crd_cifar100_same", 7 * (2 + 13) - 1, dict(method="crd+kd", n=7)),
        # table 2: 6 pairs x (teacher, student + 12 methods, no FSP); + CRD+KD (6)
        ("crd_cifar100_cross", 6 * (2 + 12), dict(method="crd+kd", n=6)),
        # SSKD README @661b972: 5 similar- + 6 cross-architecture pairs x (teacher, student + 11 methods)
        ("sskd_cifar100", (5 + 6) * (2 + 11), None),
        # CD README @2464d30, ImageNet: the ablation and comparison tables share 4 rows; 9 methods x top-1/top-5 error
        ("cd_imagenet", 9 * 2, None),
    ],
)
def test_readme_tables_are_complete(table, readme_numbers, other_rows):
    rows = reported.load(table=table)
    assert not rows.duplicated(KEY).any(), rows[rows.duplicated(KEY, keep=False)]
    if other_rows:
        extra = rows["method"] == other_rows["method"]
        assert extra.sum() == other_rows["n"]
        rows = rows[~extra]
    assert len(rows) == readme_numbers


def test_crd_tables_methods_and_pairs():
    same = reported.load(table="crd_cifar100_same")
    cross = reported.load(table="crd_cifar100_cross")
    assert list(same["method"].unique()) == ["teacher", "student", *CRD_SAME_METHODS, "crd+kd"]
    assert list(cross["method"].unique()) == ["teacher", "student", *CRD_CROSS_METHODS, "crd+kd"]
    assert same.groupby(["teacher", "student"], sort=False).size().to_dict() == {
        ("wrn_40_2", "wrn_16_2"): 16, ("wrn_40_2", "wrn_40_1"): 15, ("resnet56", "resnet20"): 16,
        ("resnet110", "resnet20"): 16, ("resnet110", "resnet32"): 16, ("resnet32x4", "resnet8x4"): 16,
        ("vgg13", "vgg8"): 16}
    assert set(cross.groupby(["teacher", "student"]).size()) == {15}
    assert reported.load(table="crd_cifar100_same", method="fsp", teacher="wrn_40_2")["student"].tolist() == ["wrn_16_2"]
    assert set(same["metric"]) == set(cross["metric"]) == {"top1"}


def test_sskd_table_methods_and_pairs():
    rows = reported.load(table="sskd_cifar100")
    assert list(rows["method"].unique()) == ["teacher", "student", *SSKD_METHODS]
    assert set(rows.groupby(["teacher", "student"]).size()) == {13}
    assert rows[["teacher", "student"]].drop_duplicates().shape[0] == 11


def test_cd_imagenet_has_both_errors_for_every_method():
    rows = reported.load(table="cd_imagenet")
    per_metric = rows.groupby("metric")["method"].apply(list)
    assert per_metric["top1_error"] == per_metric["top5_error"]
    assert len(per_metric["top1_error"]) == 9
    assert (rows.loc[rows.metric == "top5_error", "source"] == "CD README (top-5 error)").all()
