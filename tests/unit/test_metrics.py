import numpy as np
import pytest

from hsixai.metrics import balanced_class_weights, classification_metrics, f1_macro


def test_metrics_on_a_hand_made_case():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, 3)
    assert m["oa"] == pytest.approx(6 / 8)
    assert m["aa"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert m["confusion"] == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 per class: 2PR/(P+R)
    assert m["f1_per_class"] == pytest.approx([0.75, 0.8, 2 / 3])
    assert m["f1_macro"] == pytest.approx(np.mean([0.75, 0.8, 2 / 3]))
    po, pe = 6 / 8, (4 * 4 + 2 * 3 + 2 * 1) / 64
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))


def test_never_predicted_class_counts_as_zero_f1_and_absent_classes_are_left_out():
    # class 2 is present but never predicted (F1 0); class 3 is absent from the reference (left out)
    assert f1_macro(np.array([0, 1, 2]), np.array([0, 1, 1]), 4) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_balanced_class_weights():
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert w == pytest.approx([4 / 9, 4 / 3, 0.0])
