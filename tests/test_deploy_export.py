"""Export of every family with a dynamic batch, height and width: the Paddle Inference program
(plain CPU kernels and oneDNN with the pass workaround) and the ONNX model (paddle2onnx + ONNX
Runtime) compute the dygraph model's function; the exact fast argmax gives, in every backend, the
class map of that backend's full resize + argmax; SegNeXt's eval is deterministic and equal to its export."""

import os

import numpy as np
import paddle
import pytest
from deploy_models import FAMILIES, tiny_model
from helpers import paddle_predictor, run_predictor

from segkit.engine.backends import DeployError, PaddleBackend, RuntimeOptions, create_backend
from segkit.engine.class_map import candidate_ids
from segkit.engine.export import ExportError, InferenceNet, export_model
from segkit.engine.onnx_export import check_onnx, convert_to_onnx
from segkit.models.base import SegModel, head_resolution, seed_inference
from segkit.models.layers import adaptive_max_pool2d, paddle_kernels

# Two sizes per family, one a multiple of 32 and one not, the second also with batch 2.
SIZES = [(1, 3, 64, 64), (2, 3, 70, 110)]


def assert_same_function(got: np.ndarray, expected: np.ndarray) -> None:
    """Logits equal up to float reordering: relative to their scale, and the same argmax."""
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= 1e-4 * scale
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.9995


@pytest.fixture(scope="module")
def exports(tiny_exports):
    """family -> (model, export folder with model.json and model.onnx), made on first use (the session's
    exports, see conftest.TinyExports, converted to ONNX here)."""
    converted = set()

    def get(family):
        model, save_dir = tiny_exports.get(family)
        if family not in converted:
            convert_to_onnx(save_dir, simplify=family == "segformer")  # one family through onnxslim too
            converted.add(family)
        return model, save_dir

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_exports_with_dynamic_shapes_and_matches_dygraph(family, exports, tiny_exports):
    import onnxruntime as ort

    model, save_dir = exports(family)
    pred = tiny_exports.predictor(family)
    onednn = PaddleBackend(save_dir, {"model": "model.json"}, RuntimeOptions())
    assert onednn.mode.startswith("onednn"), onednn.failures  # the workaround keeps oneDNN for every family
    session = ort.InferenceSession(os.path.join(save_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    openvino = create_backend(save_dir, RuntimeOptions("openvino"))  # HRViT: compiled per input shape
    rng = np.random.default_rng(1)
    for shape in SIZES:
        x = rng.normal(size=shape).astype("float32")
        expected = model(paddle.to_tensor(x)).numpy()
        assert expected.shape == (shape[0], 4) + shape[2:]
        assert_same_function(run_predictor(pred, x), expected)
        assert_same_function(onednn.run(x), expected)
        assert_same_function(session.run(None, {"x": x})[0], expected)
        if family == "segnext":  # OpenVINO 2026.4 cannot compile its NMF (a softmax over a dynamic dimension)
            with pytest.raises(DeployError, match="OpenVINO cannot compile .* use --backend onnxruntime"):
                openvino.run(x)
        else:
            assert_same_function(openvino.run(x), expected)


def test_a_family_exports_the_exact_fast_argmax_and_its_onnx_check_reads_the_head_logits(exports, tiny_exports,
                                                                                          tmp_path, monkeypatch):
    import onnxruntime as ort

    model, logits_dir = exports("segformer")  # stride-4 head; RTFormer's stride 8 in test_export.py
    export_model(model, str(tmp_path / "argmax"), input_shape=[-1, 3, -1, -1])  # the argmax output op by default
    monkeypatch.chdir(tmp_path / "argmax")
    path = convert_to_onnx(".")  # a relative folder; paddle2onnx's scratch files must not stay in the working one
    assert sorted(os.listdir(".")) == ["deploy.yaml", "model.json", "model.onnx", "model.pdiparams"]
    save_dir = str(tmp_path / "argmax")
    results = check_onnx(model, path, [-1, 3, -1, -1], "argmax")  # the head-resolution logits, read in the graph
    assert all(r.ok and r.argmax_agreement == 1.0 for r in results)
    assert "argmax agreement 100.0000%" in results[1].line()
    sessions = [ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])
                for d in (save_dir, logits_dir)]
    predictors = [paddle_predictor(save_dir), tiny_exports.predictor("segformer")]  # the latter on logits_dir
    x = np.random.default_rng(5).normal(size=(2, 3, 70, 110)).astype("float32")
    with head_resolution(model), paddle_kernels():  # the program's kernels, not dygraph's oneDNN convolutions
        dygraph = InferenceNet(model)(paddle.to_tensor(x)).numpy()
    labels = run_predictor(predictors[0], x)
    assert labels.dtype == np.int32 and np.array_equal(labels, dygraph)
    assert np.array_equal(labels, run_predictor(predictors[1], x).argmax(axis=1)[:, None])
    assert np.array_equal(sessions[0].run(None, {"x": x})[0], sessions[1].run(None, {"x": x})[0].argmax(axis=1)[:, None])


def test_a_fixed_shape_export_runs_in_paddle_inference(tmp_path):
    # the backend's first-run check must use the exported size (SegFormer's reshapes fix it)
    model = tiny_model("segformer")
    export_model(model, str(tmp_path), input_shape=[1, 3, 96, 128], output_op="none")
    backend = create_backend(str(tmp_path), RuntimeOptions())
    assert backend.mode.startswith("onednn"), backend.failures
    x = np.random.default_rng(2).normal(size=(1, 3, 96, 128)).astype("float32")
    assert_same_function(backend.run(x), model(paddle.to_tensor(x)).numpy())


def test_onnx_check_reports_and_rejects_another_function(exports):
    model, save_dir = exports("rtformer")
    results = check_onnx(model, os.path.join(save_dir, "model.onnx"), [-1, 3, -1, -1])
    assert [r.shape for r in results] == [(1, 3, 64, 64), (2, 3, 70, 110)]
    assert all(r.ok and r.argmax_agreement == 1.0 for r in results)
    assert "argmax agreement 100.0000%" in results[0].line()
    other = tiny_model("rtformer", seed=1)  # same architecture, other weights: must be an error
    with pytest.raises(ExportError, match="does not compute the dygraph model's function"):
        check_onnx(other, os.path.join(save_dir, "model.onnx"), [-1, 3, -1, -1])


@pytest.mark.parametrize("size", [(16, 32), (5, 7), (13, 29), (3, 4), (24, 24)])
def test_adaptive_max_pool_from_slices_equals_paddles(size):
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 3) + size).astype("float32"))
    for bins in (12, 8):
        expected = paddle.nn.functional.adaptive_max_pool2d(x, bins).numpy()
        np.testing.assert_array_equal(adaptive_max_pool2d(x, bins).numpy(), expected)


def test_segnext_eval_is_deterministic_and_batch_independent():
    model = tiny_model("segnext")
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(2, 3, 48, 64)).astype("float32"))
    paddle.seed(1)
    first = model(x).numpy()
    paddle.seed(2)  # Paddle's RNG no longer matters in eval
    np.testing.assert_array_equal(model(x).numpy(), first)
    np.testing.assert_allclose(model(x[1:]).numpy(), first[1:], rtol=0, atol=1e-5)

    seed_inference(model, 3)
    other = model(x).numpy()
    assert np.abs(other - first).max() > 1e-4, "another --seed must give other bases"
    seed_inference(model, 0)
    np.testing.assert_array_equal(model(x).numpy(), first)

    model.train()  # training keeps the paper's fresh random bases on every call
    a, b = model(x)[0].numpy(), model(x)[0].numpy()
    model.eval()
    assert np.abs(a - b).max() > 1e-6


def test_segnext_export_with_a_seed_equals_dygraph_eval_with_that_seed(tmp_path):
    model = tiny_model("segnext")
    seed_inference(model, 5)
    save_dir = str(tmp_path / "segnext_seed5")
    export_model(model, save_dir, output_op="none")
    x = np.random.default_rng(3).normal(size=(2, 3, 70, 110)).astype("float32")
    pred = paddle_predictor(save_dir)
    exported = [run_predictor(pred, x) for _ in range(2)]
    np.testing.assert_array_equal(exported[0], exported[1])  # the program has no random op left
    assert_same_function(exported[0], model(paddle.to_tensor(x)).numpy())


class StrideFourLogits(SegModel):
    """A "model" whose head logits are its input max-pooled by 4 (exact values we choose), resized
    back to the input size as every segkit model does: the argmax output op on logits we craft. Its
    one weight (1.0, an exact product) gives the export a parameters file, as every model has."""

    def __init__(self, num_classes: int, align_corners: bool):
        super().__init__()
        self.num_classes, self.output_align_corners = num_classes, align_corners
        self.scale = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1.0))

    def forward(self, x):
        logits = paddle.nn.functional.max_pool2d(x, 4, stride=4) * self.scale
        return self.outputs([self.resize_output(logits, x.shape[2:])])


def crafted_logits(rng, batch, num_classes, h, w):
    """Head logits where classes disagree between neighbours everywhere, with exact ties (small
    integers, a class equal to another on a block), near-ties of one ulp, a class that leads no
    logit pixel but wins between them, and one that cannot win (far below), upsampled by 4 (plus
    2 rows and 3 columns) into the model's input."""
    logits = rng.integers(-2, 3, size=(batch, num_classes, h, w)).astype(np.float32)
    logits[:, 2, : h // 2] = logits[:, 1, : h // 2]  # class 2 ties class 1 exactly on the top half
    near = rng.random((batch, h, w)) < 0.3
    logits[:, 3][near] = np.nextafter(logits[:, 0][near], np.float32(np.inf))  # one ulp above class 0
    checker = np.indices((h - h // 2, w // 2)).sum(axis=0) % 2 == 0
    logits[:, :4, h // 2:, : w // 2] = -2  # bottom left: classes 0 and 1 alternate between 2 and -2,
    logits[:, 0, h // 2:, : w // 2] = np.where(checker, 2, -2)
    logits[:, 1, h // 2:, : w // 2] = np.where(checker, -2, 2)
    logits[:, 4] = -50
    logits[:, 4, h // 2:, : w // 2] = 1  # class 4 leads no logit pixel but wins where those two blend
    logits[:, -1] -= 50
    x = logits.repeat(4, axis=2).repeat(4, axis=3)
    return np.pad(x, ((0, 0), (0, 0), (0, 2), (0, 3)), mode="edge")


@pytest.mark.parametrize("align_corners", [False, True])
def test_exact_fast_argmax_export_equals_the_full_resize_and_argmax_in_every_backend(align_corners, tmp_path):
    import onnxruntime as ort

    model = StrideFourLogits(num_classes=6, align_corners=align_corners)
    model.eval()
    backends = {}
    for fast in (True, False):
        save_dir = str(tmp_path / ("fast" if fast else "full"))
        export_model(model, save_dir, input_shape=[-1, 6, -1, -1], fast_argmax=fast)
        convert_to_onnx(save_dir, simplify=fast)
        onnx_session = ort.InferenceSession(os.path.join(save_dir, "model.onnx"), providers=["CPUExecutionProvider"])
        backends[fast] = {
            "paddle": lambda x, pred=paddle_predictor(save_dir): run_predictor(pred, x),
            "onednn": PaddleBackend(save_dir, {"model": "model.json"}, RuntimeOptions()).run,
            "onnxruntime": lambda x, session=onnx_session: session.run(None, {"x": x})[0],
            "openvino": create_backend(save_dir, RuntimeOptions("openvino")).run,
        }
    rng = np.random.default_rng(4)
    for batch, h, w in ((2, 9, 13), (1, 16, 24)):
        x = crafted_logits(rng, batch, 6, h, w)
        expected = model(paddle.to_tensor(x)).numpy().argmax(axis=1)[:, None]
        assert (expected == 4).any()
        for name in backends[True]:
            fast, full = backends[True][name](x), backends[False][name](x)
            assert fast.dtype == full.dtype == np.int32 and fast.shape == (batch, 1, 4 * h + 2, 4 * w + 3)
            assert np.array_equal(fast, full), name
            assert (fast == expected).mean() > 0.99, name  # other runtimes round the resize their own way
        with head_resolution(model):  # class 5 was not resized
            assert candidate_ids(model(paddle.to_tensor(x))).numpy().tolist() == [0, 1, 2, 3, 4]
