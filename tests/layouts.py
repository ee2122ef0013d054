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


def _pairs(root, splits, image, label, high, h, w):
    """Two image/label pairs per split: ``image(split, i)`` and ``label(split, i)`` name them under
    ``root``; labels hold stored ids below ``high``."""
    for split in splits:
        for i in range(2):
            _image(os.path.join(root, image(split, i)), h, w, i)
            _label(os.path.join(root, label(split, i)), h, w, high, i)
    return root


def cityscapes(root, h=32, w=64):
    stem = "aachen/aachen_{:06d}_000019".format
    return _pairs(root, ("train", "val"), lambda s, i: f"leftImg8bit/{s}/{stem(i)}_leftImg8bit.png",
                  lambda s, i: f"gtFine/{s}/{stem(i)}_gtFine_labelTrainIds.png", 19, h, w)


def camvid(root, h=36, w=48):
    return _pairs(root, ("train", "val", "test"), lambda s, i: f"{s}/0001TP_{i:06d}.png",
                  lambda s, i: f"{s}annot/0001TP_{i:06d}.png", 12, h, w)


def ade20k(root, h=30, w=40):
    return _pairs(root, ("training", "validation"), lambda s, i: f"images/{s}/ADE_{s[:5]}_{i:08d}.jpg",
                  lambda s, i: f"annotations/{s}/ADE_{s[:5]}_{i:08d}.png", 151, h, w)


def cocostuff(root, h=30, w=40):
    return _pairs(root, ("train2017", "val2017"), lambda s, i: f"images/{s}/{i:012d}.jpg",
                  lambda s, i: f"annotations/{s}/{i:012d}_labelTrainIds.png", 171, h, w)


MAKERS = {"Cityscapes": cityscapes, "CamVid": camvid, "ADE20K": ade20k, "COCOStuff": cocostuff, "CocoStuff": cocostuff}
