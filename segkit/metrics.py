"""Confusion matrix and the metrics PaddleSeg derives from it.

Everything is computed from one accumulated confusion matrix ``cm[label, prediction]`` over the
whole evaluation set, so memory does not grow with the number of images and the numbers match
PaddleSeg's printed ones:

* IoU_c = TP_c / (pred_c + label_c - TP_c), 0 when the union is empty; mIoU is the mean over all classes.
* Acc = correct pixels / labelled pixels.
* Kappa = (p_o - p_e) / (1 - p_e) with p_o = Acc and p_e = sum_c pred_c * label_c / total^2.
* Dice_c = 2 TP_c / (pred_c + label_c), 0 when both are empty; Dice is the mean.
* precision_c = TP_c / pred_c and recall_c = TP_c / label_c, 0 when the denominator is 0.
"""

from typing import Dict, List, Optional

import numpy as np


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """The ``num_classes x num_classes`` matrix of (label, prediction) pixel counts.

    Pixels whose label is ``ignore_index`` are left out.

    Args:
        pred: predicted class ids, any shape.
        label: ground-truth ids, the same shape as ``pred``.
        num_classes: number of classes.
        ignore_index: label value to skip.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    valid = label != ignore_index
    label = label[valid].astype(np.int64)
    pred = pred[valid].astype(np.int64)
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        raise ValueError(f"label values {np.unique(label[bad])[:10].tolist()} are outside [0, {num_classes}) and not the ignore index {ignore_index}")
    counts = np.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def metrics_from_confusion(cm: np.ndarray) -> Dict[str, object]:
    """All metrics from an accumulated confusion matrix ``cm[label, prediction]``."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    pred_area = cm.sum(axis=0)
    label_area = cm.sum(axis=1)
    total = label_area.sum()
    iou = _safe_div(tp, pred_area + label_area - tp)
    dice = _safe_div(2 * tp, pred_area + label_area)
    acc = tp.sum() / total if total else 0.0
    expected = (pred_area * label_area).sum() / (total * total) if total else 0.0
    kappa = (acc - expected) / (1 - expected) if expected != 1 else 0.0
    return {
        "mIoU": float(iou.mean()),
        "Acc": float(acc),
        "Kappa": float(kappa),
        "Dice": float(dice.mean()),
        "class_iou": iou,
        "class_precision": _safe_div(tp, pred_area),
        "class_recall": _safe_div(tp, label_area),
        "class_dice": dice,
        "class_pixels": label_area.astype(np.int64),
    }


class ConfusionMeter:
    """Accumulates a confusion matrix image by image.

    Args:
        num_classes: number of classes.
        ignore_index: label value to skip.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.count = 0

    def update(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Add one image; returns that image's own confusion matrix."""
        cm = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self.matrix += cm
        self.count += 1
        return cm

    def merge(self, matrix: np.ndarray, count: int) -> None:
        """Add the counts of another meter (e.g. another rank's)."""
        self.matrix += matrix
        self.count += count

    def compute(self) -> Dict[str, object]:
        """Metrics over everything added so far."""
        return metrics_from_confusion(self.matrix)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive`` (NaN with one class only).

    This is the Mann-Whitney statistic with tied scores counting half, the value of scikit-learn's
    ``roc_auc_score`` that PaddleSeg's ``--auc_roc`` prints.
    """
    positive = np.asarray(positive, dtype=bool).ravel()
    num_pos = int(positive.sum())
    num_neg = positive.size - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores).ravel(), return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(mean_rank[inverse][positive].sum())
    return (rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)


class AucMeter:
    """Collects the class-1 probability and label of every labelled pixel, for ``roc_auc`` (binary segmentation).

    Exact, like PaddleSeg's, at 5 bytes per labelled pixel (PaddleSeg keeps every class's
    probability and the label: 16 bytes per pixel for two classes).

    Args:
        ignore_index: label value to skip.
    """

    def __init__(self, ignore_index: int = 255):
        self.ignore_index = ignore_index
        self.scores: List[np.ndarray] = []
        self.positive: List[np.ndarray] = []

    def update(self, prob_positive: np.ndarray, label: np.ndarray) -> None:
        """Add one image: its class-1 probabilities [H, W] and label [H, W]."""
        keep = label != self.ignore_index
        self.scores.append(prob_positive[keep].astype(np.float32))
        self.positive.append(label[keep] == 1)

    def compute(self) -> float:
        """The ROC AUC over everything added so far."""
        if not self.scores:
            return float("nan")
        return roc_auc(np.concatenate(self.scores), np.concatenate(self.positive))


def image_miou(cm: np.ndarray) -> float:
    """mIoU of one image over the classes present in its label or prediction."""
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 1.0


def per_class_table(result: Dict[str, object], class_names: Optional[List[str]] = None) -> str:
    """A readable table: class id, name, IoU, precision, recall, Dice and labelled pixels."""
    n = len(result["class_iou"])
    names = class_names or [f"class_{i}" for i in range(n)]
    width = max(10, max(len(s) for s in names))
    rows = [f"{'id':>3}  {'class':<{width}}  {'IoU':>7}  {'Prec':>7}  {'Recall':>7}  {'Dice':>7}  {'pixels':>12}"]
    for i in range(n):
        rows.append(
            f"{i:>3}  {names[i]:<{width}}  {result['class_iou'][i]:7.4f}  {result['class_precision'][i]:7.4f}  "
            f"{result['class_recall'][i]:7.4f}  {result['class_dice'][i]:7.4f}  {int(result['class_pixels'][i]):>12d}"
        )
    return "\n".join(rows)


def per_class_records(result: Dict[str, object], class_names: Optional[List[str]] = None) -> List[Dict[str, object]]:
    """One dict per class (id, name, IoU, precision, recall, Dice, labelled and predicted pixels).

    ``predicted_pixels`` needs ``result['confusion_matrix']``; it is left out when that is absent.
    """
    n = len(result["class_iou"])
    names = class_names or [f"class_{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for {n} classes")
    matrix = result.get("confusion_matrix")
    predicted = np.asarray(matrix).sum(axis=0) if matrix is not None else None
    records = []
    for i in range(n):
        record = {
            "id": i,
            "name": names[i],
            "IoU": float(result["class_iou"][i]),
            "precision": float(result["class_precision"][i]),
            "recall": float(result["class_recall"][i]),
            "Dice": float(result["class_dice"][i]),
            "pixels": int(result["class_pixels"][i]),
        }
        if predicted is not None:
            record["predicted_pixels"] = int(predicted[i])
        records.append(record)
    return records
