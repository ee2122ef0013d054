"""PyTorch side of bench_vs_pytorch.py; runs under a Python with torch (never imported by segkit).

Builds one model, then answers commands on stdin, one per line: ``forward`` or ``train`` runs once
and prints the wall time in seconds; ``quit`` ends. Models:
  * ``segformer_b0``: Hugging Face transformers ``SegformerForSemanticSegmentation`` (MiT-b0,
    decoder 256, 150 labels); the forward returns logits at stride 4, its training loss upsamples
    them to the labels;
  * ``hrvit_b1``: the official facebookresearch/HRViT ``HRViT_b1_224`` backbone (``--official``
    names its models/hrvit.py), ``forward_features`` (four maps), loss = sum of their means.
"""

import argparse
import importlib.util
import sys
import time

import torch


def build(args):
    if args.model == "segformer_b0":
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=150))
        forward = lambda x: model(pixel_values=x).logits  # noqa: E731
        loss_of = lambda x, y: model(pixel_values=x, labels=y).loss  # noqa: E731
    else:
        spec = importlib.util.spec_from_file_location("hrvit_official", args.official)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # timm's register_model looks the module up
        spec.loader.exec_module(module)
        model = module.HRViT_b1_224()
        model.head = torch.nn.Identity()
        forward = model.forward_features
        loss_of = lambda x, y: sum(o.mean() for o in model.forward_features(x))  # noqa: E731
    return model, forward, loss_of


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["segformer_b0", "hrvit_b1"], required=True)
    parser.add_argument("--official", default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--train_batch", type=int, default=2)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, forward, loss_of = build(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    x1 = torch.rand(args.batch, 3, args.size, args.size)
    x2 = torch.rand(args.train_batch, 3, args.size, args.size)
    labels = torch.randint(0, 150, (args.train_batch, args.size, args.size))
    params = sum(p.numel() for p in model.parameters())
    print(f"ready {params} torch {torch.__version__}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        start = time.perf_counter()
        if command == "forward":
            model.eval()
            with torch.no_grad():
                forward(x1)
        elif command == "train":
            model.train()
            loss = loss_of(x2, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss.item()
        else:
            break
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main()
