"""Evaluation over a dataset with a streaming confusion matrix, and the reports it writes."""

import csv
import json
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import paddle
import paddle.distributed as dist
from paddle import nn

from segkit.config import TestConfig
from segkit.engine.inference import classes_and_probabilities, predict_classes
from segkit.engine.memory import check_whole_image_fits
from segkit.engine.loader import GuardedDataset, guarded_loader, raise_on_any_rank
from segkit.engine.report import FirstImages, WorstImages
from segkit.errors import ConfigError, DatasetError, SegkitError
from segkit.logger import logger
from segkit.runtime import worker_init
from segkit.metrics import AucMeter, ConfusionMeter, image_miou, per_class_records, per_class_table
from segkit.progress import track
from segkit.visualize import confusion_heatmap


def _single_sample(batch):
    """Collate for batch size 1: keep the one sample's arrays and records as they are."""
    return batch[0]


def eval_loader(dataset, num_workers: int) -> Iterable[dict]:
    """This rank's share of ``dataset``, one sample at a time, each image once.

    With ``num_workers == 0`` the samples are read in this thread just before they are used:
    paddle's single-process DataLoader reads ahead in a background thread (a queue plus a buffer,
    about five 2048x1024 samples, 60 MiB each), which would add to the peak of full-resolution
    evaluation. With workers, each worker prefetches at most ``prefetch_factor`` samples, and an
    error while loading a sample is raised here (``segkit.engine.loader``).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    # Striding by rank (rather than DistributedBatchSampler, which pads the list to a multiple of the
    # world size) evaluates every image exactly once.
    indices = range(rank, len(dataset), world)
    if num_workers == 0:
        return (dataset[i] for i in indices)
    sampler = [[i] for i in indices]
    return guarded_loader(GuardedDataset(dataset), sampler, num_workers, _single_sample, worker_init_fn=worker_init)


def _gather_per_image(per_image: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Every rank's per-image results, so per_image.json lists all images (ranks hold disjoint shares)."""
    if dist.get_world_size() <= 1:
        return per_image
    gathered: List[List[Dict[str, object]]] = []
    dist.all_gather_object(gathered, per_image)
    return [record for part in gathered for record in part]


def _gather_counts(meter: ConfusionMeter) -> None:
    if dist.get_world_size() <= 1:
        return
    matrix = paddle.to_tensor(meter.matrix)
    count = paddle.to_tensor([meter.count], dtype="int64")
    dist.all_reduce(matrix)
    dist.all_reduce(count)
    meter.matrix = matrix.numpy()
    meter.count = int(count.numpy()[0])


def evaluate_sample(model: nn.Layer, sample: dict, meter: ConfusionMeter, test_config: TestConfig,
                    keepers: Sequence = (), auc: Optional[AucMeter] = None) -> Dict[str, object]:
    """Predict one sample, add it to ``meter`` (and ``auc``), offer it to each of ``keepers`` (e.g.
    ``WorstImages``) and return its per-image record."""
    image = sample["img"]  # an array read here, or a tensor from the DataLoader's workers
    check_whole_image_fits(model, image.shape, sample.get("img_path", "?"), test_config)
    image = image[None] if isinstance(image, paddle.Tensor) else paddle.to_tensor(image[None])
    label = np.asarray(sample["label"])
    label = label[0] if label.ndim == 3 else label
    if auc is None:
        pred = predict_classes(model, image, sample.get("trans_info", []), test_config)
    else:
        pred, probs = classes_and_probabilities(model, image, sample.get("trans_info", []), test_config)
        auc.update(probs[1].numpy(), label)
        del probs
    del image
    cm = meter.update(pred, label)
    record = {"image": sample.get("img_path", str(meter.count - 1)), "mIoU": image_miou(cm)}
    for keeper in keepers:
        keeper.offer(record["mIoU"], record["image"], pred, label)
    return record


def check_auc_roc(dataset) -> AucMeter:
    """An ``AucMeter`` for ``dataset``; the ROC AUC (PaddleSeg's ``--auc_roc``) is defined here for
    binary segmentation only."""
    if dataset.num_classes != 2:
        raise ConfigError(f"--auc_roc: needs binary segmentation (2 classes); this dataset has {dataset.num_classes}.")
    return AucMeter(dataset.ignore_index)


def _gathered_auc(auc: AucMeter) -> float:
    """The ROC AUC over every rank's pixels."""
    if dist.get_world_size() > 1:
        gathered: List[AucMeter] = []
        dist.all_gather_object(gathered, (auc.scores, auc.positive))
        auc.scores = [a for scores, _ in gathered for a in scores]
        auc.positive = [a for _, positive in gathered for a in positive]
    return auc.compute()


def check_labelled(meter: ConfusionMeter, dataset) -> None:
    """Refuse to report metrics over no labelled pixel (every one would be 0 and mean nothing)."""
    if meter.count and not meter.matrix.any():
        raise DatasetError(
            f"the {meter.count} validation image(s) of {type(dataset).__name__} hold no labelled pixel: every label "
            f"value is the ignore_index {meter.ignore_index}, so no metric is defined. Check the val labels and "
            "ignore_index (tools/check_dataset.py --config <cfg> --splits val shows the values present)."
        )


def evaluate(
    model: nn.Layer,
    dataset,
    test_config: Optional[TestConfig] = None,
    num_workers: int = 0,
    print_detail: bool = True,
    keep_worst: int = 0,
    show_images: int = 0,
    auc_roc: bool = False,
) -> Dict[str, object]:
    """Evaluate ``model`` on ``dataset`` (mode 'val'); returns the metrics plus per-image mIoU.

    Images are processed one at a time; logits are mapped back to each image's original size
    before the argmax (only the classes that can win are resized, with the same result; see
    ``predict_classes``), and compared with the original label. Across ranks the confusion matrices are
    summed, so every image counts exactly once.

    With ``keep_worst=k`` the prediction and label of the ``k`` images with the lowest mIoU are
    kept in ``result['worst']`` (worst first) for the report page (``segkit.engine.report``), and
    with ``show_images=n`` those of this rank's first ``n`` images in ``result['shown']`` (the
    fixed images VisualDL shows at every evaluation during training).

    With ``auc_roc`` (two classes only) ``result['auc_roc']`` is the area under the ROC curve of the
    class-1 probability over every labelled pixel, as PaddleSeg's ``--auc_roc``.
    """
    test_config = test_config or TestConfig()
    auc = check_auc_roc(dataset) if auc_roc else None
    was_training = model.training
    model.eval()
    meter = ConfusionMeter(dataset.num_classes, dataset.ignore_index)
    per_image: List[Dict[str, object]] = []
    worst, first = WorstImages(keep_worst), FirstImages(show_images)
    start = time.time()
    if print_detail:
        logger.info(f"Start evaluating (total_samples: {len(dataset)}, total_iters: {len(dataset)})...")
    samples = track(eval_loader(dataset, num_workers), len(range(dist.get_rank(), len(dataset), dist.get_world_size())),
                    "[EVAL]", "img", enabled=print_detail)  # this rank's share of the images
    error = None
    try:
        for sample in samples:
            per_image.append(evaluate_sample(model, sample, meter, test_config, (worst, first), auc))
            del sample  # not held while the next image is read
    except SegkitError as exc:
        error = exc  # raised below, once every rank knows (no rank waits in _gather_counts)
    raise_on_any_rank(error, "their share of the validation images")
    _gather_counts(meter)
    per_image = _gather_per_image(per_image)
    if was_training:
        model.train()
    check_labelled(meter, dataset)
    result = dict(meter.compute(), confusion_matrix=meter.matrix.copy(), num_images=meter.count, per_image=per_image,
                  worst=worst.worst_first(), shown=first.records, seconds=time.time() - start)
    if auc is not None:
        result["auc_roc"] = _gathered_auc(auc)
    if print_detail:
        log_result(result, getattr(dataset, "class_names", None))
    return result


def log_result(result: Dict[str, object], class_names: Optional[List[str]] = None) -> None:
    """Print PaddleSeg's ``[EVAL]`` lines and a per-class table with names."""
    logger.info(
        f"[EVAL] #Images: {result['num_images']} mIoU: {result['mIoU']:.4f} Acc: {result['Acc']:.4f} "
        f"Kappa: {result['Kappa']:.4f} Dice: {result['Dice']:.4f}"
        + (f" Auc_roc: {result['auc_roc']:.4f}" if "auc_roc" in result else "")
    )
    for title, key in (("IoU", "class_iou"), ("Precision", "class_precision"), ("Recall", "class_recall")):
        logger.info(f"[EVAL] Class {title}: \n{np.round(result[key], 4)}")
    logger.info("[EVAL] Per-class results:\n" + per_class_table(result, class_names))


REPORT_FILES = ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "per_image.json")


def write_reports(result: Dict[str, object], save_dir: str, class_names: Optional[List[str]] = None) -> List[str]:
    """Write the evaluation reports into ``save_dir`` and return their paths.

    * ``metrics.json``: mIoU, Acc, Kappa, Dice, the number of images and the per-class metrics with names;
    * ``per_class.csv``: the same per-class table, one row per class;
    * ``confusion_matrix.csv``: pixel counts, rows = label, columns = prediction, with class names;
    * ``confusion_matrix.png``: that matrix as a row-normalised heat map with class names on both axes;
    * ``per_image.json``: each image's mIoU, worst first.

    The confusion-matrix files need ``result['confusion_matrix']`` (``evaluate`` provides it).
    """
    os.makedirs(save_dir, exist_ok=True)
    n = len(result["class_iou"])
    names = list(class_names or [f"class_{i}" for i in range(n)])
    per_class = per_class_records(result, names)
    summary = {k: result[k] for k in ("mIoU", "Acc", "Kappa", "Dice", "auc_roc", "num_images") if k in result}
    written = []

    def target(name: str) -> str:
        written.append(os.path.join(save_dir, name))
        return written[-1]

    with open(target("metrics.json"), "w") as f:
        json.dump({**summary, "per_class": per_class}, f, indent=2)
    with open(target("per_class.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(per_class[0]))
        writer.writeheader()
        writer.writerows(per_class)
    matrix = result.get("confusion_matrix")
    if matrix is not None:
        matrix = np.asarray(matrix)
        with open(target("confusion_matrix.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["label \\ prediction", *names])
            writer.writerows([name, *map(int, row)] for name, row in zip(names, matrix))
        title = f"Confusion matrix: {summary['num_images']} images, mIoU {summary['mIoU']:.4f}"
        confusion_heatmap(matrix, names, title).save(target("confusion_matrix.png"))
    with open(target("per_image.json"), "w") as f:
        json.dump(sorted(result["per_image"], key=lambda r: r["mIoU"]), f, indent=2)
    return written
