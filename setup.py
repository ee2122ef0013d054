"""Install segkit: pip install -e . (add paddlepaddle-gpu yourself for GPU training)."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    # Paddle is left to the user: paddlepaddle (CPU) or paddlepaddle-gpu, which must not both be installed.
    return [line for line in lines if line and not line.startswith("paddlepaddle")]


setup(
    name="segkit",
    version="0.1.0",
    description="Config-driven semantic segmentation on PaddlePaddle: RTFormer, SegNeXt, SegFormer, HRViT",
    packages=find_packages(include=["segkit", "segkit.*"]),
    python_requires=">=3.9",
    install_requires=requirements(),
    package_data={"segkit.ops": ["*.cc", "*.h"]},  # compiled on first use, see segkit/ops
    # tools/export.py --format onnx and tools/infer.py --backend onnxruntime / openvino (onnxslim simplifies)
    extras_require={"deploy": ["paddle2onnx>=2.1", "onnxruntime>=1.20", "onnxslim", "openvino>=2024.0"]},
)
