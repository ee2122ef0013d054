"""Metrics against confusion matrices worked out by hand, and PaddleSeg's definitions."""

import numpy as np
import pytest

from segkit.metrics import ConfusionMeter, confusion_matrix, image_miou, metrics_from_confusion


def test_confusion_matrix_counts_and_ignores():
    label = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = confusion_matrix(pred, label, 3, ignore_index=255)
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_array_equal(cm, expected)


def test_label_outside_range_is_an_error():
    with pytest.raises(ValueError, match=r"\[7\]"):
        confusion_matrix(np.zeros((2, 2)), np.array([[0, 7], [1, 255]]), 3)


def test_metrics_by_hand():
    # rows = label, cols = prediction
    cm = np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    r = metrics_from_confusion(cm)
    # class 0: TP 3, pred 5, label 4 -> IoU 3/6; class 1: TP 4, pred 5, label 6 -> 4/7; class 2 empty -> 0
    np.testing.assert_allclose(r["class_iou"], [0.5, 4 / 7, 0.0])
    assert r["mIoU"] == pytest.approx((0.5 + 4 / 7 + 0) / 3)
    assert r["Acc"] == pytest.approx(7 / 10)
    pe = (5 * 4 + 5 * 6 + 0) / 100
    assert r["Kappa"] == pytest.approx((0.7 - pe) / (1 - pe))
    np.testing.assert_allclose(r["class_dice"], [6 / 9, 8 / 11, 0.0])
    assert r["Dice"] == pytest.approx((6 / 9 + 8 / 11) / 3)
    np.testing.assert_allclose(r["class_precision"], [3 / 5, 4 / 5, 0])
    np.testing.assert_allclose(r["class_recall"], [3 / 4, 4 / 6, 0])


def test_meter_accumulates_like_one_big_image():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, (5, 7)) for _ in range(3)]
    preds = [rng.integers(0, 4, (5, 7)) for _ in range(3)]
    meter = ConfusionMeter(4)
    for p, l in zip(preds, labels):
        meter.update(p, l)
    whole = confusion_matrix(np.concatenate(preds), np.concatenate(labels), 4)
    np.testing.assert_array_equal(meter.matrix, whole)
    assert meter.count == 3


def test_image_miou_uses_present_classes_only():
    cm = np.zeros((5, 5), np.int64)
    cm[1, 1] = 3
    cm[1, 2] = 1
    # class 1: 3 / 4, class 2: 0 / 1; classes 0, 3, 4 absent
    assert image_miou(cm) == pytest.approx((0.75 + 0.0) / 2)
