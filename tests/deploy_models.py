"""Tiny members of each model family (every layer type, narrow widths, one block per stage) for the
deployment tests, so that tracing and ONNX conversion take seconds."""

import paddle

from segkit.models.hrvit import HRViT, HRViTSegFormer
from segkit.models.rtformer import RTFormer
from segkit.models.segformer import MixVisionTransformer, SegFormer
from segkit.models.segnext import MSCAN, SegNeXt

FAMILIES = ("segformer", "rtformer", "segnext", "hrvit")
NUM_CLASSES = 4


def tiny_model(family: str, seed: int = 0) -> paddle.nn.Layer:
    """A randomly initialised, eval-mode model of ``family`` with narrow layers."""
    paddle.seed(seed)
    if family == "segformer":
        backbone = MixVisionTransformer(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), depths=(1, 1, 1, 1))
        model = SegFormer(num_classes=NUM_CLASSES, backbone=backbone, embedding_dim=32)
    elif family == "rtformer":
        model = RTFormer(num_classes=NUM_CLASSES, layer_nums=(1, 1, 1, 1), base_channels=16, spp_channels=32, head_channels=32)
    elif family == "segnext":
        backbone = MSCAN(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2))
        model = SegNeXt(num_classes=NUM_CLASSES, backbone=backbone, decoder_channels=32, ham_channels=32, num_groups=8,
                        nmf_rank=8)
    elif family == "hrvit":
        backbone = HRViT(widths=(16, 32, 64, 128), depths=((1,), (1, 1), (1, 1, 1), (1, 1, 1, 1)), head_dim=16,
                         stem_channels=16)
        model = HRViTSegFormer(num_classes=NUM_CLASSES, backbone=backbone, embedding_dim=32)
    else:
        raise ValueError(f"unknown family {family}")
    model.eval()
    return model
