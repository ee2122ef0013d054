"""tools/browse_dataset.py: samples drawn as training sees them, label over image, legend."""

import os

import numpy as np
import pytest
from conftest import QUICKSTART
from PIL import Image

import browse_dataset as browse_tool
from segkit.config import load_config
from segkit.datasets.browse import to_display, transformed_sample
from segkit.engine.sampler import SeededDataset, TrainSampler
from segkit.errors import ConfigError
from segkit.transforms import read_image
from segkit.visualize import colour_label, palette_array

SCALE = 3  # 128-pixel crops are drawn three times as large (panels are at least 320 wide)


def opts(root):
    return [f"train_dataset.dataset_root={root}", f"val_dataset.dataset_root={root}"]


def test_a_training_sample_is_the_one_training_draws(scenes_root):
    """Same seed, same augmentation: the picture shows what the first epoch feeds the model."""
    dataset = load_config(QUICKSTART, opts(scenes_root)).build_dataset("train")
    sampler = TrainSampler(len(dataset), batch_size=4, seed=7)
    for sample_seed, index in sampler.batch(0):
        image, label = SeededDataset(dataset)[(sample_seed, index)]
        shown, shown_label = transformed_sample(dataset, index, seed=7)
        np.testing.assert_array_equal(shown_label, label)
        np.testing.assert_array_equal(shown, to_display(image, dataset.transforms))
    assert shown.shape == (128, 128, 3) and shown.dtype == np.uint8


def test_normalisation_is_undone_for_display(scenes_root):
    dataset = load_config(QUICKSTART, opts(scenes_root)).build_dataset("val")  # Normalize only
    shown, label = transformed_sample(dataset, 3)
    original = read_image(dataset.file_list[3][0])
    assert np.abs(shown.astype(int) - original).max() <= 1
    assert label.shape == original.shape[:2]


def test_tool_writes_labelled_pictures_with_a_legend(scenes_root, tmp_path):
    browse_tool.main(["--config", QUICKSTART, "--opts", *opts(scenes_root), "--split", "train", "--num", "3",
                      "--seed", "7", "--save_dir", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["train_00000_0000.png", "train_00001_0001.png", "train_00002_0002.png"]
    dataset = load_config(QUICKSTART, opts(scenes_root)).build_dataset("train")
    _, label = transformed_sample(dataset, 1, seed=7)
    picture = np.asarray(Image.open(tmp_path / "train_00001_0001.png").convert("RGB"))
    side, top, gap = 128 * SCALE, 28, 8
    palette = palette_array(dataset.palette, 6)
    label_panel = picture[top:top + side, gap + 2 * (side + gap):][:, :side]
    expected = np.repeat(np.repeat(colour_label(label, palette, 6), SCALE, axis=0), SCALE, axis=1)
    np.testing.assert_array_equal(label_panel, expected)
    legend = {tuple(c) for c in picture[:, 3 * (side + gap) + gap:].reshape(-1, 3)}
    for cls in np.unique(label[label != 255]):
        assert tuple(palette[cls]) in legend
    # Shuffled: other samples, the same ones for the same seed.
    browse_tool.main(["--config", QUICKSTART, "--opts", *opts(scenes_root), "--split", "val", "--num", "2",
                      "--shuffle", "--save_dir", str(tmp_path / "s")])
    assert len(os.listdir(tmp_path / "s")) == 2
    assert sorted(os.listdir(tmp_path / "s")) != ["val_00000_0000.png", "val_00001_0001.png"]


def test_bad_count_is_a_clear_error(scenes_root, tmp_path):
    with pytest.raises(ConfigError, match="--num: expected at least 1"):
        browse_tool.main(["--config", QUICKSTART, "--opts", *opts(scenes_root), "--num", "0", "--save_dir", str(tmp_path)])
