"""The one place where classification metrics are computed (scikit-learn underneath)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score


def f1_macro(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro F1 over the classes present in `y_true` (a present class never predicted counts as 0).

    Classes absent from the reference have no defined F1 and are left out, as AA leaves them out.
    """
    present = np.unique(y_true)
    if present.size == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, macro_classes: np.ndarray | None = None
) -> dict:
    """OA, AA (mean per-class recall), Cohen's kappa, per-class and macro F1, confusion matrix.

    AA and macro F1 average over `macro_classes` (class indices), by default the classes present in
    `y_true`; over no class they are NaN. OA and kappa always count every pixel. The confusion matrix
    is [true, predicted] counts, as a list of lists.
    """
    labels = np.arange(n_classes)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(n_classes), where=support > 0)
    per_class_f1 = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    if macro_classes is None:
        aa = float(recall[support > 0].mean()) if (support > 0).any() else 0.0
        macro_f1 = f1_macro(y_true, y_pred, n_classes)  # per-class F1 of absent classes is 0 below
    else:
        macro = np.asarray(macro_classes, dtype=np.int64)
        # The mean of per-class F1 over `macro` is what f1_score(labels=macro, average="macro") gives.
        aa = float(recall[macro].mean()) if macro.size else float("nan")
        macro_f1 = float(per_class_f1[macro].mean()) if macro.size else float("nan")
    return {
        "oa": float(np.trace(cm) / max(cm.sum(), 1)),
        "aa": aa,
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "f1_macro": macro_f1,
        "f1_per_class": per_class_f1.tolist(),
        "confusion": cm.tolist(),
    }


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """n_samples / (n_classes * count_k), as scikit-learn's "balanced"; 0 for absent classes."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return np.divide(len(labels), n_classes * counts, out=np.zeros(n_classes), where=counts > 0)


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and population std over instances."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def mean_iou(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean intersection over union over the classes present in `y_true`: TP / (TP + FP + FN) per class."""
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    present = cm.sum(axis=1) > 0
    if not present.any():
        return float("nan")
    return float((tp[present] / union[present]).mean())
