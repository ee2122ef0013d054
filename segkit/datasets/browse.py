"""Pictures of dataset samples as the model sees them: after the transforms, with the label over
the image and a legend of the classes present (``tools/browse_dataset.py``).

Geometric transforms are applied to image and label together in every split (in the val split
the dataset itself leaves labels at their original size; here they follow the image, so the
overlay lines up). A training sample gets the augmentation it gets in the first epoch of a run
with the same ``--seed``.
"""

from typing import Tuple

import numpy as np
from PIL import Image

from segkit.engine.sampler import sample_seed, seed_everything
from segkit.transforms import Compose, read_image
from segkit.transforms.photometric import Normalize
from segkit.visualize import colour_label, overlay, palette_array, side_by_side


def transformed_sample(dataset, index: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Sample ``index`` of ``dataset`` after its transforms: (image HxWxC uint8, label HxW int64).

    The transforms run under the seed training would give this sample in its first epoch.
    """
    image_path, label_path = dataset.file_list[index]
    image = read_image(image_path, dataset.img_channels)
    data = {"img": image, "trans_info": []}
    if label_path is not None:
        data["label"] = dataset.load_label(label_path, image.shape[:2])
    seed_everything(sample_seed(seed, 0, index))
    data = dataset.transforms(data)
    label = data.get("label")
    if label is None:  # an unlabelled test split: everything counts as ignored
        label = np.full(data["img"].shape[1:], dataset.ignore_index, np.int64)
    return to_display(data["img"], dataset.transforms), label


def to_display(image_chw: np.ndarray, transforms: Compose) -> np.ndarray:
    """A network input (float CxHxW) back to a displayable HxWxC uint8 image, undoing ``Normalize``."""
    image = np.asarray(image_chw, np.float32).transpose(1, 2, 0)
    normalize = next((t for t in transforms.transforms if isinstance(t, Normalize)), None)
    if normalize is not None:
        image = (image * normalize.std + normalize.mean) * 255.0
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def sample_picture(dataset, index: int, seed: int = 0, weight: float = 0.5) -> Image.Image:
    """image | label over the image | label, titled with the size, and a legend of the classes present.

    Ignored label pixels are white in the label panel and left uncoloured in the overlay.
    """
    image, label = transformed_sample(dataset, index, seed)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    palette = palette_array(dataset.palette, dataset.num_classes)
    known = (label >= 0) & (label < dataset.num_classes)
    blended = np.where(known[..., None], overlay(image, np.where(known, label, 0), palette, weight), image)
    present = [int(c) for c in np.unique(label[known])]
    h, w = label.shape
    titles = [f"#{index} after transforms ({w}x{h})", "label over image", "label (white: ignored)"]
    panels = [image, blended, colour_label(label, palette, dataset.num_classes)]
    return side_by_side(panels, titles, present, dataset.class_names, palette)
