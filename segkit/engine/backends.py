"""Runtimes for exported models: Paddle Inference, ONNX Runtime and OpenVINO, behind one ``run(batch)`` call.

An export folder (``tools/export.py``) holds ``deploy.yaml``, the Paddle program (``model.json`` or
``model.pdmodel`` + ``model.pdiparams``) and, with ``--format onnx``, ``model.onnx``. A backend takes
a float32 [N, 3, H, W] batch and returns the program's output as a NumPy array.

Paddle Inference on the CPU uses oneDNN where it works. Paddle 3.3's oneDNN placement pass turns
every bilinear resize into a kernel that rejects its float-array ``scale`` attribute (SegFormer,
RTFormer, SegNeXt), and its depth-wise convolution pass leaves a fused op without its
``fuse_activation`` attribute (HRViT). The backend therefore tries oneDNN without the placement
pass, then also without the depth-wise pass, then Paddle's plain CPU kernels, checking each
configuration on a small input before using it; ``backend.mode`` says which one runs.

OpenVINO (optional, ``pip install openvino``) reads the export's ``model.onnx`` and runs it on the
CPU in fp32: its CPU plugin would otherwise pick bf16 on processors that have it, which changes
the result.
"""

import dataclasses
import importlib
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

from segkit.errors import SegkitError

BACKENDS = ("paddle", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16")
# oneDNN configurations tried in order: passes deleted from Paddle Inference's oneDNN pipeline.
ONEDNN_ATTEMPTS = (("onednn", ("onednn_placement_pass",)),
                   ("onednn-no-depthwise-pass", ("onednn_placement_pass", "depthwise_conv_onednn_pass")))


class DeployError(SegkitError):
    """An export folder, backend or device setting that cannot be used."""


@dataclasses.dataclass
class RuntimeOptions:
    """How to run an exported model.

    Attributes:
        backend: 'paddle' (Paddle Inference), 'onnxruntime' or 'openvino'.
        device: 'cpu' or 'gpu'.
        cpu_threads: compute threads on the CPU (None: the runtime's default).
        use_trt: TensorRT on the GPU (Paddle Inference's TensorRT engine or ONNX Runtime's provider).
        precision: 'fp32' or 'fp16' (fp16 with TensorRT only).
        use_onednn: try oneDNN on the CPU (Paddle Inference); False runs the plain kernels.
        trt_shapes: TensorRT dynamic-shape ranges, {'min': [N, C, H, W], 'opt': ..., 'max': ...}.
        ort_spinning: let ONNX Runtime's idle compute threads spin (its default); off by default here,
            since spinning threads compete with every other process on a shared CPU.
    """

    backend: str = "paddle"
    device: str = "cpu"
    cpu_threads: Optional[int] = None
    use_trt: bool = False
    precision: str = "fp32"
    use_onednn: bool = True
    trt_shapes: Optional[Dict[str, List[int]]] = None
    ort_spinning: bool = False

    def check(self) -> "RuntimeOptions":
        """Raise DeployError for a combination that cannot run; return self."""
        if self.backend not in BACKENDS:
            raise DeployError(f"--backend {self.backend}: expected one of {', '.join(BACKENDS)}.")
        if self.device not in ("cpu", "gpu"):
            raise DeployError(f"--device {self.device}: expected cpu or gpu.")
        if self.precision not in PRECISIONS:
            raise DeployError(f"--precision {self.precision}: expected one of {', '.join(PRECISIONS)}.")
        if self.backend == "openvino" and self.device != "cpu":
            raise DeployError("--backend openvino runs on the CPU here; use --device cpu (or --backend paddle / "
                              "onnxruntime on a GPU).")
        if self.use_trt and self.device != "gpu":
            raise DeployError("--use_trt needs --device gpu (TensorRT runs on NVIDIA GPUs only).")
        if self.precision == "fp16" and not self.use_trt:
            raise DeployError("--precision fp16 needs --use_trt (the CPU and plain GPU paths run fp32).")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise DeployError(f"--cpu_threads {self.cpu_threads}: expected a positive number of threads.")
        return self


def read_deploy_yaml(export_dir: str) -> Dict[str, Any]:
    """The ``Deploy`` section of ``export_dir/deploy.yaml``.

    Raises:
        DeployError: the folder or its deploy.yaml is missing or malformed.
    """
    if not os.path.isdir(export_dir):
        raise DeployError(f"{export_dir}: no such export folder. Create one with tools/export.py --save_dir {export_dir}.")
    path = os.path.join(export_dir, "deploy.yaml")
    if not os.path.isfile(path):
        raise DeployError(f"{export_dir}: no deploy.yaml; this is not a tools/export.py folder (re-export the model).")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    deploy = data.get("Deploy")
    if not isinstance(deploy, dict) or "model" not in deploy:
        raise DeployError(f"{path}: expected a 'Deploy' section with 'model', 'params' and 'transforms'.")
    return deploy


class PaddleBackend:
    """Paddle Inference on the export's program (oneDNN with the pass workaround and a fallback, or GPU/TensorRT)."""

    def __init__(self, export_dir: str, deploy: Dict[str, Any], options: RuntimeOptions):
        from paddle import inference

        self._inference = inference
        self.model_file = os.path.join(export_dir, deploy["model"])
        self.params_file = os.path.join(export_dir, deploy.get("params", "model.pdiparams"))
        for path in (self.model_file, self.params_file):
            if not os.path.isfile(path):
                raise DeployError(f"{path}: missing; the export folder is incomplete (re-run tools/export.py).")
        self.options = options
        # the first-run check uses the exported shape where it is fixed (tools/export.py --input_shape)
        exported = list(deploy.get("input_shape") or [-1, 3, -1, -1])
        self.probe_shape = [dim if dim and dim > 0 else free for dim, free in zip(exported, (1, 3, 64, 64))]
        self.mode, self.failures = "", []
        self.predictor = self._create()

    def _config(self, deleted_passes: Optional[Sequence[str]]):
        config = self._inference.Config(self.model_file, self.params_file)
        config.disable_glog_info()
        opts = self.options
        if opts.device == "gpu":
            config.enable_use_gpu(512, 0)
            if opts.use_trt:
                self._enable_tensorrt(config)
            return config
        config.disable_gpu()
        if opts.cpu_threads:
            config.set_cpu_math_library_num_threads(opts.cpu_threads)
        if deleted_passes is None:
            config.disable_mkldnn()
        else:
            config.enable_mkldnn()
            for name in deleted_passes:
                config.delete_pass(name)
        return config

    def _enable_tensorrt(self, config) -> None:
        precision = self._inference.PrecisionType.Half if self.options.precision == "fp16" else \
            self._inference.PrecisionType.Float32
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1, min_subgraph_size=3,
                                      precision_mode=precision, use_static=False, use_calib_mode=False)
        shapes = self.options.trt_shapes or {"min": [1, 3, 64, 64], "opt": [1, 3, 512, 1024], "max": [1, 3, 2048, 2048]}
        name = "x"
        config.set_trt_dynamic_shape_info({name: shapes["min"]}, {name: shapes["max"]}, {name: shapes["opt"]})

    def _attempts(self):
        if self.options.device == "gpu":
            return [("gpu-tensorrt" if self.options.use_trt else "gpu", None)]
        onednn = list(ONEDNN_ATTEMPTS) if self.options.use_onednn else []
        return onednn + [("plain-cpu", None)]

    def _create(self):
        probe = np.zeros(self.probe_shape, dtype=np.float32)
        for mode, deleted in self._attempts():
            try:
                predictor = self._inference.create_predictor(self._config(deleted))
                self._run(predictor, probe)  # some oneDNN failures only show on the first run
            except Exception as exc:  # Paddle raises several types (NotImplementedError, RuntimeError, ...)
                if mode in ("plain-cpu", "gpu", "gpu-tensorrt"):
                    raise DeployError(f"Paddle Inference cannot run {self.model_file} ({mode}): "
                                      f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
                self.failures.append(f"{mode}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                continue
            self.mode = mode
            return predictor
        raise AssertionError("unreachable: the last attempt raises")

    @staticmethod
    def _run(predictor, batch: np.ndarray) -> np.ndarray:
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The program's output for a float32 [N, 3, H, W] batch."""
        return self._run(self.predictor, batch)


def import_runtime(name: str, install: str):
    """The runtime module ``name``; DeployError saying how to install it when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise DeployError(f"--backend {name} needs the {name} package: {install}.") from exc


def onnx_model_path(export_dir: str, deploy: Dict[str, Any]) -> str:
    """The export's ONNX file; DeployError when the folder has none."""
    path = os.path.join(export_dir, deploy.get("onnx_model") or "model.onnx")
    if not os.path.isfile(path):
        raise DeployError(f"{export_dir}: no ONNX model ({os.path.basename(path)}); export with "
                          "tools/export.py --format onnx, or use --backend paddle for this folder.")
    return path


class OnnxRuntimeBackend:
    """ONNX Runtime on ``model.onnx`` (CPU; CUDA or TensorRT execution providers on a GPU)."""

    def __init__(self, export_dir: str, deploy: Dict[str, Any], options: RuntimeOptions):
        ort = import_runtime("onnxruntime", "pip install onnxruntime (onnxruntime-gpu on a GPU machine)")
        path = onnx_model_path(export_dir, deploy)
        session_options = ort.SessionOptions()
        if options.cpu_threads:
            session_options.intra_op_num_threads = options.cpu_threads
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.ort_spinning else "0")
        providers = self._providers(ort, options)
        self.session = ort.InferenceSession(path, session_options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.mode = self.session.get_providers()[0]

    @staticmethod
    def _providers(ort, options: RuntimeOptions) -> List[Any]:
        if options.device == "cpu":
            return ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        wanted = "TensorrtExecutionProvider" if options.use_trt else "CUDAExecutionProvider"
        if wanted not in available:
            raise DeployError(f"--device gpu{' --use_trt' if options.use_trt else ''}: this onnxruntime has no "
                              f"{wanted} (it has {', '.join(available)}); install onnxruntime-gpu.")
        if options.use_trt:
            trt = {"trt_fp16_enable": options.precision == "fp16"}
            return [(wanted, trt), "CUDAExecutionProvider"]
        return [wanted]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a float32 [N, 3, H, W] batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def last_line(exc: Exception) -> str:
    """The last non-empty line of an exception's message (OpenVINO nests its causes first)."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return lines[-1][:160]


_OPENVINO_CORES = []  # the process's one openvino.Core, never released


def _openvino_core(openvino):
    """The process's one ``openvino.Core``, created on first use and kept.

    OpenVINO's CPU plugin (2026.4) installs an alternate signal stack on the thread that loads it and,
    once a second Core has loaded it again and the Cores go, leaves the thread's alternate stack
    pointing at memory it unmapped: the next signal handled on that thread (SIGCHLD from any child
    process, once a handler is installed, as Paddle's DataLoader installs one) then kills the process
    with SIGSEGV. One Core for the whole process loads the plugin once and never unloads it.
    """
    if not _OPENVINO_CORES:
        _OPENVINO_CORES.append(openvino.Core())
    return _OPENVINO_CORES[0]


class OpenVinoBackend:
    """OpenVINO on ``model.onnx`` (CPU, fp32, latency hint).

    The model is compiled once with the export's dynamic batch and size. Where OpenVINO's CPU plugin
    cannot compile the dynamic graph (2026.4 fails on HRViT's in a broadcast pass), it is compiled
    per input shape instead, on first use of each shape; ``mode`` and ``failures`` say so.
    """

    def __init__(self, export_dir: str, deploy: Dict[str, Any], options: RuntimeOptions):
        openvino = import_runtime("openvino", "pip install openvino (or use --backend onnxruntime on the same export)")
        self.path = onnx_model_path(export_dir, deploy)
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if options.cpu_threads:
            self.config["INFERENCE_NUM_THREADS"] = options.cpu_threads
        self.core, self.per_shape, self.failures = _openvino_core(openvino), {}, []
        self.mode = f"openvino {openvino.__version__.split('-')[0]} CPU fp32"
        try:
            self.dynamic = self.core.compile_model(self.path, "CPU", self.config)
        except RuntimeError as exc:
            self.failures.append(f"dynamic shapes: {last_line(exc)}")
            self.dynamic, self.mode = None, self.mode + ", compiled per input shape"

    def _compiled(self, shape: Sequence[int]):
        if self.dynamic is not None:
            return self.dynamic
        key = tuple(shape)
        if key not in self.per_shape:
            model = self.core.read_model(self.path)
            model.reshape(list(key))
            try:
                self.per_shape[key] = self.core.compile_model(model, "CPU", self.config)
            except RuntimeError as exc:  # OpenVINO 2026.4 on SegNeXt: SoftmaxDecomposition, a dynamic dimension
                raise DeployError(f"OpenVINO cannot compile {self.path} ({self.failures[0]}; at input {list(key)}: "
                                  f"{last_line(exc)}); use --backend onnxruntime or paddle for this model.") from exc
        return self.per_shape[key]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a float32 [N, 3, H, W] batch."""
        compiled = self._compiled(batch.shape)
        return np.array(compiled([np.ascontiguousarray(batch, dtype=np.float32)])[compiled.output(0)])


def check_device(options: RuntimeOptions) -> None:
    """Raise DeployError when ``--device gpu`` is asked of a Paddle build without CUDA."""
    if options.device == "gpu" and options.backend == "paddle":
        import paddle

        if not paddle.is_compiled_with_cuda():
            raise DeployError("--device gpu: this Paddle build has no CUDA (the CPU package 'paddlepaddle'); "
                              "install paddlepaddle-gpu for your CUDA version, or use --device cpu.")


def create_backend(export_dir: str, options: RuntimeOptions, deploy: Optional[Dict[str, Any]] = None):
    """A backend for the export in ``export_dir`` (its ``deploy.yaml`` is read unless given)."""
    options.check()
    check_device(options)
    deploy = deploy if deploy is not None else read_deploy_yaml(export_dir)
    if options.backend == "onnxruntime":
        return OnnxRuntimeBackend(export_dir, deploy, options)
    if options.backend == "openvino":
        return OpenVinoBackend(export_dir, deploy, options)
    return PaddleBackend(export_dir, deploy, options)
