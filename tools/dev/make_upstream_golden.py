"""Write tests/data/upstream_golden.npz: SegFormer and SegNeXt logits from the upstream PyTorch code.

Run with a Python that has torch, transformers, safetensors, mmengine, mmcv-lite and
mmsegmentation 1.x (none of which segkit or its tests need), from the repository root::

    /path/to/torch-venv/bin/python tools/dev/make_upstream_golden.py [--nvlabs_repo DIR]

Each case builds the upstream model at a real size (reduced to 7 classes so the file stays small),
fills it with ``tests/upstream_golden.draw_weights`` (seeded NumPy draws, in the upstream names and
layouts) and records its eval-mode logits, resized to the input as segkit returns them, for one
67x93 image (not a multiple of 32):

* ``hf_segformer_b0`` / ``hf_segformer_b2``: transformers' ``SegformerForSemanticSegmentation``; the
  weights go through a ``model.safetensors`` in the Hub's names, loaded by ``from_pretrained``.
* ``mmseg_segformer_b0`` / ``mmseg_segformer_b2``: mmseg 1.x ``MixVisionTransformer`` + ``SegformerHead``.
* ``nvlabs_segformer_b0``: NVlabs/SegFormer's own ``mit_b0`` + ``SegFormerHead``, read from a git
  mirror of that repository (``--nvlabs_repo``; skipped with a message when absent). Its mmseg 0.x
  imports are satisfied by mmseg 1.x equivalents; the model code itself runs unchanged.
* ``mmseg_segnext_t`` / ``mmseg_segnext_b``: mmseg 1.x ``MSCAN`` + ``LightHamHead`` (the official
  Visual-Attention-Network/SegNeXt code has the same module names and arithmetic). The NMF's random
  initial bases are replaced by segkit's fixed eval bases for seed 0 (a NumPy draw, also stored).

mmseg 1.2 refuses mmcv 2.2 by version number and imports ``mmcv.ops`` (compiled, absent from
mmcv-lite) for heads not used here; both are sidestepped before importing it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from upstream_golden import GOLDEN_FILE, digest, draw_weights, kind_of  # noqa: E402

SIZE = (67, 93)
CLASSES = 7
NMF_SEED = 0
MIT = {"b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256), "b2": ([64, 128, 320, 512], [3, 4, 6, 3], 768)}
MSCAN = {"t": ([32, 64, 160, 256], [3, 3, 5, 2], 256, 16), "b": ([64, 128, 320, 512], [3, 3, 12, 3], 512, 64)}


def _import_mmseg():
    import mmcv

    mmcv.__version__ = "2.1.0"  # mmseg 1.2 asserts mmcv < 2.2; the modules used here run on 2.2

    class _NoOps(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {})

    sys.modules.setdefault("mmcv.ops", _NoOps("mmcv.ops"))


def spec_of(state):
    return [(k, list(v.shape), kind_of(k, v.shape, str(v.dtype).replace("torch.", ""))) for k, v in state.items()]


def fill(model, seed, prefixes=("",)):
    """Draw weights for ``model``'s state dict (keys as saved) and load them strictly."""
    state = model.state_dict()
    spec = spec_of(state)
    weights = draw_weights(spec, seed)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
    return spec, weights


def record(cases, name, spec, weights, seed, image, logits, feats=(), bases=None, note=""):
    meta = {"spec": spec, "weight_seed": seed, "weights_sha256": digest(weights), "numpy": np.__version__,
            "torch": torch.__version__, "note": note}
    out = {f"{name}_meta": np.array(json.dumps(meta)), f"{name}_input": image,
           f"{name}_logits": F.interpolate(logits, size=SIZE, mode="bilinear", align_corners=False).numpy()}
    for i, feat in enumerate(feats):
        out[f"{name}_feat{i}"] = feat.numpy()
    if bases is not None:
        out[f"{name}_bases"] = bases
    cases.update(out)
    print(f"{name}: {len(spec)} tensors, logits {tuple(out[f'{name}_logits'].shape)}")


def hf_segformer(cases, variant, seed, image):
    from safetensors.numpy import load_file, save_file
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    dims, depths, decoder = MIT[variant]
    config = SegformerConfig(hidden_sizes=dims, depths=depths, decoder_hidden_size=decoder, num_labels=CLASSES)
    with tempfile.TemporaryDirectory() as folder:
        SegformerForSemanticSegmentation(config).save_pretrained(folder)  # the Hub's names and layouts
        path = os.path.join(folder, "model.safetensors")
        saved = load_file(path)
        spec = [(k, list(v.shape), kind_of(k, v.shape, str(v.dtype))) for k, v in saved.items()]
        weights = draw_weights(spec, seed)
        save_file(weights, path, metadata={"format": "pt"})
        model = SegformerForSemanticSegmentation.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(image), output_hidden_states=True)
    record(cases, f"hf_segformer_{variant}", spec, weights, seed, image, out.logits, out.hidden_states,
           note=f"transformers {__import__('transformers').__version__}")


def mmseg_segformer(cases, variant, seed, image):
    from mmseg.models.backbones.mit import MixVisionTransformer
    from mmseg.models.decode_heads.segformer_head import SegformerHead

    dims, depths, decoder = MIT[variant]
    model = torch.nn.Module()
    model.backbone = MixVisionTransformer(embed_dims=dims[0], num_layers=depths, num_heads=[1, 2, 5, 8])
    model.decode_head = SegformerHead(in_channels=dims, in_index=[0, 1, 2, 3], channels=decoder, num_classes=CLASSES,
                                      norm_cfg=dict(type="BN", requires_grad=True), align_corners=False)
    spec, weights = fill(model, seed)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.from_numpy(image))
        logits = model.decode_head(feats)
    record(cases, f"mmseg_segformer_{variant}", spec, weights, seed, image, logits, feats)


def _nvlabs_module(repo, path, replacements, namespace):
    source = subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True, capture_output=True,
                            text=True).stdout
    for old, new in replacements:
        source = source.replace(old, new)
    exec(compile(source, f"NVlabs/SegFormer/{path}", "exec"), namespace)
    return namespace


def nvlabs_segformer(cases, repo, seed, image):
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead as Base
    from mmseg.models.utils import resize

    class BaseDecodeHead(Base):  # mmseg 0.x's head accepted (and ignored) the decoder_params key
        def __init__(self, decoder_params=None, **kwargs):
            super().__init__(**kwargs)

    drop = [("from mmseg.models.builder import BACKBONES", ""), ("from mmseg.utils import get_root_logger", ""),
            ("from mmcv.runner import load_checkpoint", ""), ("@BACKBONES.register_module()", ""),
            ("@register_model", ""), ("from mmseg.ops import resize", ""), ("from ..builder import HEADS", ""),
            ("from .decode_head import BaseDecodeHead", ""), ("from mmseg.models.utils import *", ""),
            ("import attr", ""), ("from IPython import embed", ""), ("@HEADS.register_module()", "")]
    backbone_ns = _nvlabs_module(repo, "mmseg/models/backbones/mix_transformer.py", drop, {"__name__": "nv_mit"})
    head_ns = _nvlabs_module(repo, "mmseg/models/decode_heads/segformer_head.py", drop,
                             {"__name__": "nv_head", "BaseDecodeHead": BaseDecodeHead, "resize": resize})
    model = torch.nn.Module()
    model.backbone = backbone_ns["mit_b0"]()
    model.decode_head = head_ns["SegFormerHead"](
        feature_strides=[4, 8, 16, 32], in_channels=[32, 64, 160, 256], in_index=[0, 1, 2, 3], channels=128,
        dropout_ratio=0.1, num_classes=CLASSES, norm_cfg=dict(type="BN", requires_grad=True), align_corners=False,
        decoder_params=dict(embed_dim=256))
    spec, weights = fill(model, seed)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.from_numpy(image))
        logits = model.decode_head(feats)
    record(cases, "nvlabs_segformer_b0", spec, weights, seed, image, logits, feats)


def mmseg_segnext(cases, variant, seed, image):
    from mmseg.models.backbones.mscan import MSCAN as TorchMSCAN
    from mmseg.models.decode_heads import ham_head

    dims, depths, width, rank = MSCAN[variant]
    model = torch.nn.Module()
    model.backbone = TorchMSCAN(embed_dims=dims, mlp_ratios=[8, 8, 4, 4], depths=depths, drop_path_rate=0.1,
                                norm_cfg=dict(type="BN", requires_grad=True))
    model.decode_head = ham_head.LightHamHead(
        in_channels=dims[1:], in_index=[1, 2, 3], channels=width, ham_channels=width, num_classes=CLASSES,
        dropout_ratio=0.1, norm_cfg=dict(type="GN", num_groups=32, requires_grad=True), align_corners=False,
        ham_kwargs=dict(MD_S=1, MD_R=rank, train_steps=6, eval_steps=7, inv_t=100, rand_init=True))
    spec, weights = fill(model, seed)
    # segkit's fixed eval bases for its DEFAULT_EVAL_SEED 0 (``NMF.seed_eval_bases``): NumPy's float32 uniform draw.
    bases = np.random.default_rng(NMF_SEED).random((1, width, rank), dtype=np.float32)
    ham_head.NMF2D._build_bases = lambda self, B, S, D, R, device=None: F.normalize(torch.from_numpy(bases), dim=1)
    model.eval()
    with torch.no_grad():
        logits = model.decode_head(model.backbone(torch.from_numpy(image)))
    record(cases, f"mmseg_segnext_{variant}", spec, weights, seed, image, logits, bases=bases,
           note=f"NMF initial bases: default_rng({NMF_SEED}).random((1, D, R), dtype=float32), L2-normalised over D")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvlabs_repo", default="/work/.mirror/NVlabs+SegFormer/repo",
                        help="a git clone or mirror of NVlabs/SegFormer")
    args = parser.parse_args()
    _import_mmseg()
    torch.set_num_threads(2)
    cases = {}
    image = np.random.default_rng(0).normal(size=(1, 3, *SIZE)).astype("float32")
    hf_segformer(cases, "b0", 10, image)
    hf_segformer(cases, "b2", 11, image)
    mmseg_segformer(cases, "b0", 12, image)
    mmseg_segformer(cases, "b2", 16, image)
    if os.path.isdir(args.nvlabs_repo):
        nvlabs_segformer(cases, args.nvlabs_repo, 13, image)
    else:
        print(f"{args.nvlabs_repo} not found: nvlabs_segformer_b0 not written")
    mmseg_segnext(cases, "t", 14, image)
    mmseg_segnext(cases, "b", 15, image)
    os.makedirs(os.path.dirname(GOLDEN_FILE), exist_ok=True)
    np.savez_compressed(GOLDEN_FILE, **cases)
    print(f"wrote {GOLDEN_FILE} ({os.path.getsize(GOLDEN_FILE) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
