"""The dataset contract and the generic file-list ``Dataset``.

A segkit dataset holds ``file_list`` (``(image_path, label_path or None)`` pairs), ``num_classes``,
``ignore_index``, ``class_names`` and ``palette``, and returns numpy-only dicts:

* ``train``: ``{'img': float32 CxHxW, 'label': int64 HxW, 'img_path': str}`` after the train
  transforms (fixed-size when the pipeline crops, so samples batch);
* ``val``: ``{'img', 'label', 'img_path', 'trans_info'}``; only the image is transformed, the
  label keeps the original size, and ``trans_info`` lets the engine map logits back to it;
* ``test``: ``{'img', 'img_path', 'trans_info'}``, plus ``label`` as in val when the split has
  labels (CamVid's test split is the one papers report).

Every label loaded in train/val mode is checked (``segkit.data_check.check_label``): a value that
is neither a class id nor the ignore index, or a label whose size differs from its image, raises
DatasetError naming the file.

Keyword names follow PaddleSeg 2.8's ``paddleseg/datasets/dataset.py`` (Apache-2.0) so its YAML
files work unchanged; unlike PaddleSeg nothing is ever downloaded, and file-list entries are
checked to exist when the dataset is built.
"""

import os
from typing import Annotated, Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle

from segkit.data_check import check_label
from segkit.errors import ConfigError, DatasetError
from segkit.registry import DATASETS, TRANSFORMS, build
from segkit.transforms import Compose, read_image, read_label

MODES = ("train", "val", "test")


def default_palette(num_classes: int) -> List[List[int]]:
    """The PASCAL VOC colour map extended to ``num_classes`` entries (class 0 is black).

    The bits of the class id are spread over the high bits of R, G and B, so neighbouring ids get
    very different colours; PaddleSeg and mmseg use the same map.
    """
    palette = []
    for cid in range(num_classes):
        r = g = b = 0
        c = cid
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.append([r, g, b])
    return palette


# The annotation of a dataset's ``transforms`` parameter: in a config, a list of ``{type: ...}``
# transforms of the TRANSFORMS registry, built (by ``segkit.registry.build``) before the dataset.
Transforms = Annotated[List[Callable], TRANSFORMS]


def build_transforms(transforms: Sequence[Any], owner: str) -> List[Any]:
    """Transforms given from Python: built ones pass, ``{type: ...}`` configs are built by ``segkit.registry.build``.

    Args:
        transforms: transform objects or configs.
        owner: the dotted key of their owner, for messages (``val_dataset``, ``deploy.yaml``).
    """
    if transforms is None:
        raise ConfigError(f"{owner}.transforms: a list of transforms is required (may be empty).")
    if not isinstance(transforms, (list, tuple)):
        raise ConfigError(f"{owner}.transforms: expected a list, got {type(transforms).__name__}.")
    return [build(t, TRANSFORMS, where=f"{owner}.transforms.{i}") for i, t in enumerate(transforms)]


def binary_edge(label: np.ndarray, radius: int = 2) -> np.ndarray:
    """1 where a pixel is within ``radius`` of a different class, else 0 (shape 1xHxW, uint8)."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    lab = label.astype(np.float32)
    edge = cv2.dilate(lab, kernel) != cv2.erode(lab, kernel)
    return edge[None].astype(np.uint8)


class SegDataset(paddle.io.Dataset):
    """Machinery shared by all segkit datasets; subclasses fill ``file_list``.

    Subclasses set ``NUM_CLASSES``, ``IGNORE_INDEX``, ``CLASS_NAMES`` and ``PALETTE`` for a fixed
    benchmark, and override ``map_label`` when stored ids differ from training ids.

    Args:
        mode: ``train``, ``val`` or ``test``.
        transforms: transform configs or objects, applied by ``Compose``.
        num_classes: number of classes.
        ignore_index: label id of unlabelled pixels.
        img_channels: 3 (colour) or 1 (grey).
        edge: also return a 1xHxW ``edge`` mask of class boundaries in train mode.
        class_names: one name per class; default ``class_0 ...``.
        palette: one ``[r, g, b]`` per class; default ``default_palette``.
    """

    NUM_CLASSES: Optional[int] = None
    IGNORE_INDEX: int = 255
    CLASS_NAMES: Optional[Sequence[str]] = None
    PALETTE: Optional[Sequence[Sequence[int]]] = None

    def _setup(
        self,
        mode: str,
        transforms: Sequence[Any],
        num_classes: int,
        ignore_index: int = 255,
        img_channels: int = 3,
        edge: bool = False,
        class_names: Optional[Sequence[str]] = None,
        palette: Optional[Sequence[Sequence[int]]] = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(mode, str) or mode.lower() not in MODES:
            raise ConfigError(f"{owner}.mode: got {mode!r}, expected one of {', '.join(MODES)}.")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"{owner}.num_classes: expected a positive int, got {num_classes!r}.")
        if img_channels not in (1, 3):
            raise ConfigError(f"{owner}.img_channels: expected 1 or 3, got {img_channels!r}.")
        self.mode = mode.lower()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.img_channels = img_channels
        self.edge = edge
        self.transforms = Compose(build_transforms(transforms, owner), img_channels=img_channels)
        names = class_names if class_names is not None else self.CLASS_NAMES
        if names is not None and len(names) != num_classes:
            raise ConfigError(f"{owner}.class_names: {len(names)} names given for {num_classes} classes.")
        self.class_names = list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]
        colours = palette if palette is not None else self.PALETTE
        if colours is not None and len(colours) < num_classes:
            raise ConfigError(f"{owner}.palette: {len(colours)} colours given for {num_classes} classes.")
        self.palette = [list(map(int, c)) for c in colours] if colours is not None else default_palette(num_classes)
        self.file_list: List[Tuple[str, Optional[str]]] = []

    def map_label(self, label: np.ndarray) -> np.ndarray:
        """Turn a stored label into training ids; identity unless the dataset stores other ids."""
        return label

    def load_label(self, path: str, image_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """Read, map and check the label at ``path`` (see ``segkit.data_check.check_label``)."""
        label = read_label(path)
        if label.ndim == 2:
            label = self.map_label(label)
        check_label(label, self.num_classes, self.ignore_index, path, image_size)
        return label

    def __len__(self) -> int:
        return len(self.file_list)

    def __getitem__(self, idx: int) -> dict:
        img_path, label_path = self.file_list[idx]
        img = read_image(img_path, self.img_channels)
        data = {"img": img, "trans_info": []}
        if label_path is None:
            data = self.transforms(data)
            return {"img": data["img"], "img_path": img_path, "trans_info": _plain(data["trans_info"])}
        label = self.load_label(label_path, img.shape[:2])
        if self.mode != "train":
            data = self.transforms(data)
            return {
                "img": data["img"],
                "label": label.astype(np.int64),
                "img_path": img_path,
                "trans_info": _plain(data["trans_info"]),
            }
        data["label"] = label
        data = self.transforms(data)
        sample = {"img": data["img"], "label": data["label"], "img_path": img_path}
        if self.edge:
            sample["edge"] = binary_edge(data["label"])
        return sample


def _plain(trans_info: List[Tuple[str, Tuple[int, int]]]) -> List[Tuple[str, Tuple[int, int]]]:
    """trans_info with plain Python ints, so it pickles and collates predictably."""
    return [(str(name), (int(size[0]), int(size[1]))) for name, size in trans_info]


def resolve(path: str, dataset_root: str) -> str:
    """``path`` if it exists as given, else joined to ``dataset_root``."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(dataset_root, path)


def read_file_list(
    list_path: str, dataset_root: str, separator: str, need_labels: bool
) -> List[Tuple[str, Optional[str]]]:
    """Parse a ``image<sep>label`` file list; paths are relative to ``dataset_root``.

    Raises:
        DatasetError: a malformed line, or entries whose files do not exist (all named).
    """
    pairs: List[Tuple[str, Optional[str]]] = []
    with open(list_path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            items = line.split(separator)
            if len(items) == 2:
                pairs.append((os.path.join(dataset_root, items[0]), os.path.join(dataset_root, items[1])))
            elif len(items) == 1 and not need_labels:
                pairs.append((os.path.join(dataset_root, items[0]), None))
            else:
                expected = "image<sep>label" if need_labels else "image or image<sep>label"
                raise DatasetError(
                    f"{list_path}:{lineno}: {line!r} splits into {len(items)} field(s) on separator "
                    f"{separator!r}; expected {expected}. Fix the line or set separator."
                )
    if not pairs:
        raise DatasetError(f"file list {list_path} has no entries; expected lines 'image{separator}label'.")
    missing = [p for pair in pairs for p in pair if p is not None and not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:10]) + ("\n  ..." if len(missing) > 10 else "")
        raise DatasetError(
            f"{len(missing)} file(s) listed in {list_path} do not exist (paths are joined to "
            f"dataset_root {dataset_root!r}):\n  {shown}"
        )
    return pairs


@DATASETS.register
class Dataset(SegDataset):
    """A dataset described by file lists (``image<sep>label`` per line, relative to dataset_root).

    Args:
        mode: ``train``, ``val`` or ``test``.
        dataset_root: folder the file-list paths are relative to.
        transforms: transform configs (``{type: ...}``) or objects.
        num_classes: number of classes; label ids must lie in ``[0, num_classes)`` or equal
            ``ignore_index``.
        img_channels: 3 (colour) or 1 (grey).
        train_path: file list for ``mode: train`` (absolute, or relative to cwd or dataset_root).
        val_path: file list for ``mode: val``.
        test_path: file list for ``mode: test`` (labels optional).
        separator: field separator in the file lists.
        ignore_index: label id of unlabelled pixels.
        edge: also return a class-boundary mask in train mode.
        class_names: one name per class.
        palette: one ``[r, g, b]`` per class.
    """

    def __init__(
        self,
        mode: str,
        dataset_root: str,
        transforms: Transforms,
        num_classes: int,
        img_channels: int = 3,
        train_path: Optional[str] = None,
        val_path: Optional[str] = None,
        test_path: Optional[str] = None,
        separator: str = " ",
        ignore_index: int = 255,
        edge: bool = False,
        class_names: Optional[List[str]] = None,
        palette: Optional[List[List[int]]] = None,
    ):
        self._setup(mode, transforms, num_classes, ignore_index, img_channels, edge, class_names, palette)
        if not dataset_root or not os.path.isdir(dataset_root):
            raise DatasetError(
                f"Dataset.dataset_root {dataset_root!r} is not a folder; expected the folder that the "
                "file-list paths are relative to. Fix dataset_root (e.g. --opts train_dataset.dataset_root=...)."
            )
        self.dataset_root = dataset_root
        list_path = {"train": train_path, "val": val_path, "test": test_path}[self.mode]
        key = f"{self.mode}_path"
        if list_path is None:
            raise DatasetError(f"Dataset: mode is {self.mode!r} but {key} is not set; give the file list.")
        resolved = resolve(list_path, dataset_root)
        if not os.path.isfile(resolved):
            raise DatasetError(
                f"Dataset.{key}: file list {list_path!r} not found (also tried {resolved!r}); create it "
                "with tools/data/create_file_list.py or fix the path."
            )
        self.file_list = read_file_list(resolved, dataset_root, separator, need_labels=self.mode != "test")


def require_dir(path: str, dataset: str, pattern: str) -> str:
    """Return ``path`` if it is a folder, else raise DatasetError naming it and the expected layout."""
    if not os.path.isdir(path):
        raise DatasetError(
            f"{dataset}: folder {path!r} not found; expected the official layout {pattern}. "
            "Check dataset_root (segkit never downloads datasets; fetch them from the official site)."
        )
    return path


def list_files(folder: str, suffix: str, subfolders: bool = False) -> Dict[str, str]:
    """Files in ``folder`` (or its immediate subfolders) ending with ``suffix``, keyed by stem.

    The key is the path relative to ``folder`` with ``suffix`` removed (``aachen/aachen_000000_000019``
    for a Cityscapes city folder), so images and labels are paired by name, never by position.
    """
    found: Dict[str, str] = {}
    dirs = [""]
    if subfolders:
        dirs = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    for sub in dirs:
        for entry in os.scandir(os.path.join(folder, sub)):
            if entry.is_file() and entry.name.endswith(suffix):
                key = os.path.join(sub, entry.name[: -len(suffix)]) if sub else entry.name[: -len(suffix)]
                found[key] = entry.path
    return found


def pair_files(
    images: Dict[str, str], labels: Dict[str, str], dataset: str, image_pattern: str, label_pattern: str
) -> List[Tuple[str, str]]:
    """Pair images and labels with the same key; any image without label or label without image is an error."""
    if not images:
        raise DatasetError(f"{dataset}: no images found matching {image_pattern}. Check dataset_root and mode.")
    missing = sorted(set(images) - set(labels))
    extra = sorted(set(labels) - set(images))
    if missing or extra:
        lines = []
        if missing:
            lines.append(f"{len(missing)} image(s) have no label {label_pattern}:")
            lines += [f"  {images[k]}" for k in missing[:10]] + (["  ..."] if len(missing) > 10 else [])
        if extra:
            lines.append(f"{len(extra)} label(s) have no image {image_pattern}:")
            lines += [f"  {labels[k]}" for k in extra[:10]] + (["  ..."] if len(extra) > 10 else [])
        raise DatasetError(f"{dataset}: images and labels do not pair up.\n" + "\n".join(lines))
    return [(images[k], labels[k]) for k in sorted(images)]
