"""The report-card maths against small hand-computed matrices (FIELD_GUIDE.md section 4).

Expected numbers are written out by hand, with the arithmetic in comments, so a wrong formula fails.
Code is 0-indexed: the guide's R[i, j] is R[i - 1, j - 1] here.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from continual.metrics.report import (
    ReportCard,
    average_accuracy,
    average_accuracy_curve,
    bwt,
    format_experience_line,
    format_report,
    forgetting,
    forgetting_per_experience,
    fwt,
    harmonic_mean,
    long_tail_accuracy,
    mean_per_class_accuracy,
    per_class_accuracy,
    save_heatmap,
    write_json_atomic,
)

NAN = float("nan")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Rows: after training on e1, e2, e3. Upper triangle (j > i) = zero-shot.
# R[1, 0] = 0.85 > R[0, 0] = 0.80: e2 helped e1 before e3 made it forget, so the max in
# forgetting is NOT the diagonal and forgetting != -BWT (a wrong max would be caught).
R3 = np.array(
    [
        [0.80, 0.20, 0.10],
        [0.85, 0.90, 0.30],
        [0.50, 0.70, 0.95],
    ]
)
# Same seen cells, no attribute heads: zero-shot cells are NaN.
R3_NAN = np.array(
    [
        [0.80, NAN, NAN],
        [0.85, 0.90, NAN],
        [0.50, 0.70, 0.95],
    ]
)
BASELINE3 = [0.33, 0.15, 0.05]


# --- average accuracy ----------------------------------------------------------------------


def test_average_accuracy_hand_computed() -> None:
    # A_3 = (0.50 + 0.70 + 0.95) / 3 = 2.15 / 3 = 0.716666...
    assert average_accuracy(R3) == pytest.approx(2.15 / 3)
    # A_1 = R[0, 0] = 0.80 (zero-shot cells 0.20, 0.10 must not count)
    assert average_accuracy(R3, 0) == pytest.approx(0.80)
    # A_2 = (0.85 + 0.90) / 2 = 0.875 (zero-shot 0.30 must not count)
    assert average_accuracy(R3, 1) == pytest.approx(0.875)


def test_average_accuracy_curve() -> None:
    assert average_accuracy_curve(R3) == pytest.approx([0.80, 0.875, 2.15 / 3])


def test_average_accuracy_ignores_nan_upper_triangle() -> None:
    assert average_accuracy_curve(R3_NAN) == pytest.approx([0.80, 0.875, 2.15 / 3])


def test_average_accuracy_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        average_accuracy(R3, 3)


def test_non_square_matrix_rejected() -> None:
    with pytest.raises(ValueError):
        average_accuracy(np.zeros((2, 3)))


# --- forgetting ----------------------------------------------------------------------------


def test_forgetting_hand_computed() -> None:
    # e1: max(R[0,0]=0.80, R[1,0]=0.85) = 0.85;  0.85 - R[2,0]=0.50 = 0.35
    # e2: max(R[0,1]=0.20 (zero-shot), R[1,1]=0.90) = 0.90;  0.90 - R[2,1]=0.70 = 0.20
    assert forgetting_per_experience(R3) == pytest.approx([0.35, 0.20])
    # F_3 = (0.35 + 0.20) / 2 = 0.275
    assert forgetting(R3) == pytest.approx(0.275)


def test_forgetting_ignores_nan_upper_triangle() -> None:
    assert forgetting_per_experience(R3_NAN) == pytest.approx([0.35, 0.20])
    assert forgetting(R3_NAN) == pytest.approx(0.275)


def test_forgetting_max_is_over_all_rows_before_the_last() -> None:
    # The guide's "max over i < T" taken literally: a zero-shot cell above the diagonal counts.
    R = R3.copy()
    R[0, 1] = 0.95  # zero-shot on e2 after e1, higher than trained R[1,1] = 0.90
    # e2: max(0.95, 0.90) - 0.70 = 0.25;  F = (0.35 + 0.25) / 2 = 0.30
    assert forgetting_per_experience(R) == pytest.approx([0.35, 0.25])
    assert forgetting(R) == pytest.approx(0.30)
    # The last row is not part of the max: raising R[2, 0] lowers forgetting, can go negative.
    R[2, 0] = 0.90  # e1: max(0.80, 0.85) - 0.90 = -0.05
    assert forgetting_per_experience(R)[0] == pytest.approx(-0.05)


# --- backward and forward transfer ---------------------------------------------------------


def test_bwt_hand_computed() -> None:
    # e1: R[2,0] - R[0,0] = 0.50 - 0.80 = -0.30
    # e2: R[2,1] - R[1,1] = 0.70 - 0.90 = -0.20
    # BWT = (-0.30 - 0.20) / 2 = -0.25
    assert bwt(R3) == pytest.approx(-0.25)
    assert bwt(R3_NAN) == pytest.approx(-0.25)


def test_fwt_hand_computed() -> None:
    # j=1: R[0,1] - b[1] = 0.20 - 0.15 = 0.05
    # j=2: R[1,2] - b[2] = 0.30 - 0.05 = 0.25
    # FWT = (0.05 + 0.25) / 2 = 0.15
    assert fwt(R3, BASELINE3) == pytest.approx(0.15)
    # b[0] is never used (there is no experience before e1).
    assert fwt(R3, [0.99, 0.15, 0.05]) == pytest.approx(0.15)


def test_fwt_none_without_zero_shot() -> None:
    assert fwt(R3_NAN, BASELINE3) is None
    # One missing zero-shot cell is enough to make FWT undefined.
    R = R3.copy()
    R[1, 2] = NAN
    assert fwt(R, BASELINE3) is None
    # Also accepted as None (e.g. a matrix that came back from JSON).
    assert fwt([[0.8, None], [0.7, 0.9]], [0.5, 0.5]) is None


def test_fwt_baseline_length_checked() -> None:
    with pytest.raises(ValueError):
        fwt(R3, [0.1, 0.1])


# --- T == 1 --------------------------------------------------------------------------------


def test_single_experience() -> None:
    R = np.array([[0.7]])
    assert average_accuracy(R) == pytest.approx(0.7)
    assert average_accuracy_curve(R) == pytest.approx([0.7])
    assert forgetting_per_experience(R) == []
    assert forgetting(R) is None
    assert bwt(R) is None
    assert fwt(R, [0.1]) is None


# --- harmonic mean -------------------------------------------------------------------------


def test_harmonic_mean() -> None:
    # 2 * 0.6 * 0.2 / (0.6 + 0.2) = 0.24 / 0.8 = 0.30 (arithmetic mean would be 0.40)
    assert harmonic_mean(0.6, 0.2) == pytest.approx(0.30)
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(0.5, 0.0) == 0.0  # one side at zero sinks H
    assert harmonic_mean(0.0, 0.0) == 0.0  # no division by zero


# --- per-class accuracy --------------------------------------------------------------------

# Imbalanced: 8 images of class 0 (all right), 2 of class 1 (one right). Class 2 is only
# ever predicted, never a target, so it is not part of the per-class average.
TARGET = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
PRED = [0, 0, 0, 0, 0, 0, 0, 0, 2, 1]


@pytest.mark.parametrize("to", [np.array, torch.tensor], ids=["numpy", "torch"])
def test_per_class_differs_from_per_image(to) -> None:
    pred, target = to(PRED), to(TARGET)
    # per class: class 0 -> 8/8 = 1.0, class 1 -> 1/2 = 0.5
    assert per_class_accuracy(pred, target) == pytest.approx({0: 1.0, 1: 0.5})
    # per class mean: (1.0 + 0.5) / 2 = 0.75, while per image it would be 9/10 = 0.90
    assert mean_per_class_accuracy(pred, target) == pytest.approx(0.75)
    per_image = float(np.mean(np.array(PRED) == np.array(TARGET)))
    assert per_image == pytest.approx(0.90)


def test_per_class_accuracy_keys_are_python_ints() -> None:
    acc = per_class_accuracy(torch.tensor(PRED), torch.tensor(TARGET))
    assert all(type(k) is int and type(v) is float for k, v in acc.items())


def test_per_class_accuracy_checks_inputs() -> None:
    with pytest.raises(ValueError):
        per_class_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError):
        mean_per_class_accuracy(np.array([], dtype=int), np.array([], dtype=int))


# --- long tail -----------------------------------------------------------------------------


def test_long_tail_known_split() -> None:
    counts = {0: 100, 1: 50, 2: 50, 3: 20, 4: 5, 5: 1}
    acc = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.5, 4: 0.3, 5: 0.1}
    # sorted by count desc, ties by id: 0(100) 1(50) 2(50) 3(20) 4(5) 5(1); 6 classes -> 2/2/2.
    # The tie 1/2 at 50 is cut by class id: 1 goes to head, 2 to medium.
    # head   {0, 1}: (0.9 + 0.8) / 2 = 0.85
    # medium {2, 3}: (0.7 + 0.5) / 2 = 0.60
    # tail   {4, 5}: (0.3 + 0.1) / 2 = 0.20
    out = long_tail_accuracy(acc, counts)
    assert out is not None
    assert out["head"] == pytest.approx(0.85)
    assert out["medium"] == pytest.approx(0.60)
    assert out["tail"] == pytest.approx(0.20)
    assert out["thresholds"] == {"head_min_count": 50, "tail_max_count": 5}


def test_long_tail_uneven_group_sizes() -> None:
    # 4 classes -> 2/1/1 (larger groups first): head {0, 1}, medium {2}, tail {3}.
    counts = {3: 1, 2: 10, 1: 20, 0: 40}  # dict order must not matter
    acc = {0: 1.0, 1: 0.6, 2: 0.4, 3: 0.0}
    out = long_tail_accuracy(acc, counts)
    assert out is not None
    assert out["head"] == pytest.approx(0.8)  # (1.0 + 0.6) / 2
    assert out["medium"] == pytest.approx(0.4)
    assert out["tail"] == pytest.approx(0.0)
    assert out["thresholds"] == {"head_min_count": 20, "tail_max_count": 1}


def test_long_tail_not_applicable() -> None:
    assert long_tail_accuracy({0: 0.5, 1: 0.6, 2: 0.7}, {0: 10, 1: 10, 2: 10}) is None  # balanced
    assert long_tail_accuracy({0: 0.5, 1: 0.6}, {0: 10, 1: 1}) is None  # fewer than 3 classes
    # A class without a training count (never trained) is left out: only 2 classes remain.
    assert long_tail_accuracy({0: 0.5, 1: 0.6, 2: 0.1}, {0: 10, 1: 1}) is None


# --- report card: dict / JSON round trip ----------------------------------------------------


def _example_card() -> ReportCard:
    return ReportCard.from_matrix(
        R3_NAN,
        baseline=BASELINE3,
        zero_shot={"accuracy": np.float32(0.25), "chance": 0.1, "n_categories": np.int64(10)},
        gzsl={"seen": 0.6, "unseen": 0.2, "harmonic": harmonic_mean(0.6, 0.2)},
        attribute_accuracy={"striped": 0.7, "round": 0.9, "mean": 0.8},
        fine_grained={"accuracy": 0.65, "n_pairs": 12},
        long_tail=None,
        timing={"wall_s": 12.5, "train_samples_per_s": 2048.0, "eval_share": 0.125},
        extra={"learning_speed_auc": np.float64(NAN)},
    )


def test_from_matrix_fills_matrix_metrics() -> None:
    card = _example_card()
    assert card.average_accuracy == pytest.approx(2.15 / 3)
    assert card.forgetting == pytest.approx(0.275)
    assert card.bwt == pytest.approx(-0.25)
    assert card.fwt is None  # NaN zero-shot cells
    assert ReportCard.from_matrix(R3, baseline=BASELINE3).fwt == pytest.approx(0.15)


def test_to_dict_is_json_safe_and_round_trips() -> None:
    d = _example_card().to_dict()
    assert d["accuracy_matrix"][0] == [pytest.approx(0.80), None, None]  # NaN -> None
    assert d["extra"]["learning_speed_auc"] is None
    assert type(d["zero_shot"]["accuracy"]) is float  # numpy float32 -> float
    assert type(d["zero_shot"]["n_categories"]) is int  # numpy int64 -> int
    text = json.dumps(d, allow_nan=False)  # raises if any NaN survived
    back = ReportCard.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert math.isnan(back.matrix()[0, 1])  # None comes back as NaN in the array view
    assert back.bwt == pytest.approx(-0.25)


def test_from_dict_keeps_unknown_keys_in_extra() -> None:
    d = _example_card().to_dict()
    d["new_metric"] = 0.5
    assert ReportCard.from_dict(d).extra["new_metric"] == 0.5


def test_write_json_atomic(tmp_path) -> None:
    path = tmp_path / "report.json"
    d = _example_card().to_dict()
    write_json_atomic(d, path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == d
    assert os.listdir(tmp_path) == ["report.json"]  # no temp file left behind


def test_write_json_atomic_refuses_nan_and_keeps_old_file(tmp_path) -> None:
    path = tmp_path / "report.json"
    write_json_atomic({"a": 1}, path)
    with pytest.raises(ValueError):
        write_json_atomic({"a": NAN}, path)
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["report.json"]


# --- formatting ----------------------------------------------------------------------------


def test_format_report_contains_key_numbers() -> None:
    card = ReportCard.from_matrix(
        R3,
        baseline=BASELINE3,
        zero_shot={"accuracy": 0.25, "chance": 0.1, "n_categories": 10},
        gzsl={"seen": 0.6, "unseen": 0.2, "harmonic": 0.3, "auc": 0.45},
    )
    text = format_report(card)
    assert "71.7%" in text  # A_3 = 2.15 / 3
    assert "87.5" in text  # A_2 on the curve
    assert "+27.5 pts" in text  # forgetting 0.275
    assert "-25.0 pts" in text  # BWT
    assert "+15.0 pts" in text  # FWT
    assert "25.0%" in text and "chance 10.0%" in text and "2.5x chance" in text
    assert "H 30.0%" in text and "AUSUC 45.0% (calibration-free)" in text
    assert "20.0*" in text  # zero-shot cell R[0, 1] marked
    assert "85.0 " in text  # trained cell R[1, 0] unmarked
    assert "n/a" in text  # e.g. long tail, timing
    assert all(len(line) <= 100 for line in text.splitlines())


def test_format_report_without_zero_shot_and_long_stream() -> None:
    text = format_report(ReportCard.from_matrix(R3_NAN))
    assert "*" not in text  # nothing zero-shot measured: no marks, no legend
    T = 30
    R = np.tril(np.full((T, T), 0.5)) + np.triu(np.full((T, T), NAN), 1)
    text = format_report(ReportCard.from_matrix(R))
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "e30" in text and "..." in text


def test_format_experience_line() -> None:
    line = format_experience_line(1, R3_NAN, {"zero_shot_acc": 0.3, "loss": 0.41234})
    # A_2 = (0.85 + 0.90) / 2 = 87.5%
    assert line == "[e2/3] A_2 87.5% | zero_shot_acc 30.0% | loss 0.4123"


# --- heat map ------------------------------------------------------------------------------


@pytest.mark.parametrize("R", [R3, R3_NAN, np.array([[0.7]])], ids=["zero-shot", "nan", "T1"])
def test_save_heatmap_writes_png_atomically(tmp_path, R) -> None:
    path = tmp_path / "heatmap.png"
    save_heatmap(R, path, title="test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(tmp_path) == ["heatmap.png"]
