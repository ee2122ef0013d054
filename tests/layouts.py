"""Tiny copies of the official dataset layouts, written by the tests (a few small images each)."""

import os

import numpy as np
from PIL import Image


def _image(path, h, w, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)).save(path)


def _label(path, h, w, high, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, high, (h, w)).astype(np.uint8)).save(path)


def cityscapes(root, h=32, w=64):
    for split in ("train", "val"):
        for i in range(2):
            stem = f"aachen_{i:06d}_000019"
            _image(os.path.join(root, "leftImg8bit", split, "aachen", f"{stem}_leftImg8bit.png"), h, w, i)
            _label(os.path.join(root, "gtFine", split, "aachen", f"{stem}_gtFine_labelTrainIds.png"), h, w, 19, i)
    return root


def camvid(root, h=36, w=48):
    for split in ("train", "val", "test"):
        for i in range(2):
            _image(os.path.join(root, split, f"0001TP_{i:06d}.png"), h, w, i)
            _label(os.path.join(root, f"{split}annot", f"0001TP_{i:06d}.png"), h, w, 12, i)
    return root


def ade20k(root, h=30, w=40):
    for split in ("training", "validation"):
        for i in range(2):
            name = f"ADE_{split[:5]}_{i:08d}"
            _image(os.path.join(root, "images", split, f"{name}.jpg"), h, w, i)
            _label(os.path.join(root, "annotations", split, f"{name}.png"), h, w, 151, i)
    return root


def cocostuff(root, h=30, w=40):
    for split in ("train2017", "val2017"):
        for i in range(2):
            name = f"{i:012d}"
            _image(os.path.join(root, "images", split, f"{name}.jpg"), h, w, i)
            _label(os.path.join(root, "annotations", split, f"{name}_labelTrainIds.png"), h, w, 171, i)
    return root


MAKERS = {"Cityscapes": cityscapes, "CamVid": camvid, "ADE20K": ade20k, "COCOStuff": cocostuff, "CocoStuff": cocostuff}
