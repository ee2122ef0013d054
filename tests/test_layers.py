"""segkit's shared layers against the Paddle operations they stand in for."""

import contextlib

import numpy as np
import paddle
import pytest
from paddle import nn

from segkit import ops
from segkit.models import layers
from segkit.models.layers import (GELU, Conv2D, Dropout2D, LayerNorm, Linear, _bilinear_matrix, add_all, add_bias,
                                 add_channel_bias, attention, gelu, onednn_applies, paddle_kernels, resize_bilinear,
                                 scale_channels, softmax, upsample_nearest)

ONEDNN_CONV2D = ops.conv2d


def _run(layer: nn.Layer, x: paddle.Tensor):
    """Output and input/parameter gradients of ``(layer(x) * weights).sum()``."""
    x = x.detach()
    x.stop_gradient = False
    out = layer(x)
    paddle.seed(1)
    (out * paddle.randn(out.shape)).sum().backward()
    grads = [x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]
    return out.numpy(), grads


CONV_CASES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=1, bias_attr=False),
    dict(kernel_size=(1, 7), padding=(0, 3), groups=8),
    dict(kernel_size=1),
    dict(kernel_size=3, padding="same", dilation=2, groups=2),
]


def _conv_pair(kwargs, channels=8):
    """segkit's Conv2D and paddle.nn.Conv2D with the same parameters."""
    paddle.seed(0)
    ours = Conv2D(channels, channels, **kwargs)
    theirs = nn.Conv2D(channels, channels, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.set_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_conv2d_on_paddles_kernel_matches_paddle_bit_for_bit(kwargs):
    """With Paddle's convolution (oneDNN off), the same output and gradients to the bit as
    paddle.nn.Conv2D: only the bias is added in another layout."""
    ours, theirs = _conv_pair(kwargs)
    x = paddle.randn([2, 8, 11, 14])
    with paddle_kernels():
        (out, grads) = _run(ours, x)
    ref, ref_grads = _run(theirs, x)
    np.testing.assert_array_equal(out, ref)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs", CONV_CASES[:3] + [
    dict(kernel_size=7, padding=3, groups=16),  # HRViT's depth-wise 7x7
    dict(kernel_size=5, stride=4, padding=2, groups=16),  # depth-wise weight gradients by segkit's own loop
    dict(kernel_size=5, padding=4, dilation=2, groups=16, bias_attr=False),
    dict(kernel_size=(21, 1), padding=(10, 0), groups=16),  # SegNeXt's strips
    dict(kernel_size=3, padding=2, dilation=2, groups=4),
    dict(kernel_size=7, stride=4, padding=3),  # SegFormer's first patch embedding
    dict(kernel_size=2, stride=2),  # SegFormer's attention reduction
    dict(kernel_size=1, stride=2),
])
def test_conv2d_by_onednn_matches_paddle(kwargs, monkeypatch):
    """Through oneDNN (segkit.ops): output and gradients equal Paddle's to float rounding."""
    assert ops.available(), "the oneDNN operator must build here (g++, pip install --no-deps onednn-devel)"
    calls = []
    monkeypatch.setattr(ops, "conv2d", lambda *args: calls.append(1) or ONEDNN_CONV2D(*args))
    ours, theirs = _conv_pair(kwargs, channels=16)
    x = paddle.randn([2, 16, 23, 30])
    (out, grads), (ref, ref_grads) = _run(ours, x), _run(theirs, x)
    assert calls, "the oneDNN operator did not run"
    for got, want in zip([out] + grads, [ref] + ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


NHWC_ONEDNN, NCHW_ONEDNN = [dict(channels_last=True)], [{}]  # how ops.conv2d is called


@pytest.mark.parametrize("kwargs, calls_made", [
    (dict(kernel_size=3, padding=1, groups=16), NHWC_ONEDNN),  # HRViT's depth-wise convs on tokens
    (dict(kernel_size=5, padding=2, groups=16, bias_attr=False), NHWC_ONEDNN),
    (dict(kernel_size=7, padding=3, groups=16), NHWC_ONEDNN),
    (dict(kernel_size=5, stride=4, padding=2, groups=16), NHWC_ONEDNN),
    (dict(kernel_size=3, padding=1), NCHW_ONEDNN),  # not depth-wise: conv2d_nchw between transposes
    (dict(kernel_size=3, padding="same", groups=16), []),  # string padding: Paddle's, between transposes
])
def test_conv2d_on_nhwc_data_matches_paddle(kwargs, calls_made, monkeypatch):
    """``data_format="NHWC"``: depth-wise convolutions by oneDNN on the NHWC data, others between transposes;
    output and gradients equal paddle.nn.Conv2D's NHWC convolution to float rounding, and the same
    through Paddle's kernels (``paddle_kernels()``)."""
    assert ops.available(), "the oneDNN operator must build here (g++, pip install --no-deps onednn-devel)"
    calls = []
    monkeypatch.setattr(ops, "conv2d", lambda *args, **kw: calls.append(kw) or ONEDNN_CONV2D(*args, **kw))
    ours, theirs = _conv_pair(dict(kwargs, data_format="NHWC"), channels=16)
    x = paddle.randn([2, 23, 30, 16])
    runs = [_run(ours, x), _run(theirs, x)]
    assert calls == calls_made
    ours.clear_gradients()
    with paddle_kernels():
        runs.append(_run(ours, x))
    assert calls == calls_made
    (ref, ref_grads) = runs[1]
    for out, grads in runs[::2]:
        for got, want in zip([out] + grads, [ref] + ref_grads):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("factor, size", [(2, [14, 22]), (4, [27, 41]), (8, [56, 88])])
def test_upsample_nearest_equals_interpolate_and_crop(factor, size, monkeypatch):
    """By segkit's resize operator (taps i // factor): the same values as Paddle's nearest upsampling
    followed by the crop to the bit, the same gradients to float rounding."""
    calls = []
    resize = ops.resize_bilinear
    monkeypatch.setattr(ops, "resize_bilinear", lambda *args: calls.append(1) or resize(*args))
    data = paddle.randn([2, 3, 7, 11])
    runs = []
    for context in (contextlib.nullcontext(), paddle_kernels()):
        x = data.detach()
        x.stop_gradient = False
        with context:
            out = upsample_nearest(x, factor, size)
        paddle.seed(1)
        (out * paddle.randn(out.shape)).sum().backward()
        runs.append((out.numpy(), x.grad.numpy()))
    assert calls == [1]
    assert runs[0][0].shape == (2, 3, *size)
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    grad, want = runs[0][1], runs[1][1]  # sums of factor x factor outputs, in another order
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_per_channel_ops_equal_broadcasting():
    x = paddle.randn([2, 5, 3, 4])
    values = paddle.randn([5, 1, 1])
    np.testing.assert_array_equal(add_channel_bias(x, values.flatten()).numpy(), (x + values).numpy())
    np.testing.assert_array_equal(scale_channels(x, values).numpy(), (x * values).numpy())


def _bias_run(add, x: paddle.Tensor, bias: paddle.Tensor, x_grad: bool = True, bias_grad: bool = True):
    """Output, x gradient and bias gradient of ``(add(x, bias) * weights).sum()`` (None where not wanted)."""
    x, bias = x.detach(), bias.detach()
    x.stop_gradient, bias.stop_gradient = not x_grad, not bias_grad
    out = add(x, bias)
    paddle.seed(1)
    (out * paddle.randn(out.shape)).sum().backward()
    return [out.numpy()] + [None if t.grad is None else t.grad.numpy() for t in (x, bias)]


BIAS_CASES = [  # segkit's add, Paddle's broadcast, x shape, bias length
    (add_bias, lambda x, b: x + b, [2, 37, 6], 6),
    (add_channel_bias, lambda x, b: x + b.reshape([1, -1, 1, 1]), [2, 6, 9, 5], 6),
]


def _no_size_threshold(monkeypatch):
    """The product gradient for tensors of any size (the small ones of these tests)."""
    monkeypatch.setattr(layers, "TOKEN_BIAS_MIN_SIZE", 0)
    monkeypatch.setattr(layers, "CHANNEL_BIAS_MIN_SIZE", 0)


@pytest.mark.parametrize("ours, theirs, shape, channels", BIAS_CASES)
@pytest.mark.parametrize("x_grad, bias_grad", [(True, True), (False, True), (True, False)])
def test_bias_adds_match_broadcast_with_product_gradient(ours, theirs, shape, channels, x_grad, bias_grad, monkeypatch):
    """Output and x gradient to the bit, bias gradient (a matrix product) to float rounding; a frozen
    bias or a frozen x too. The product runs exactly when the bias needs a gradient."""
    calls = []
    apply = layers._AddBias.apply
    monkeypatch.setattr(layers._AddBias, "apply", lambda *args: calls.append(1) or apply(*args))
    _no_size_threshold(monkeypatch)
    x, bias = paddle.randn(shape), paddle.randn([channels])
    got = _bias_run(ours, x, bias, x_grad, bias_grad)
    want = _bias_run(theirs, x, bias, x_grad, bias_grad)
    assert len(calls) == int(bias_grad)
    for g, w in zip(got[:2], want[:2]):
        np.testing.assert_array_equal(g, w)
    assert (got[2] is None) == (want[2] is None) == (not bias_grad)
    if bias_grad:
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ours, theirs, shape, channels", BIAS_CASES)
def test_bias_adds_keep_paddles_add_elsewhere(ours, theirs, shape, channels, monkeypatch):
    """Small maps, no gradients, inside paddle_kernels(), float64: Paddle's own add and gradient."""
    monkeypatch.setattr(layers._AddBias, "apply", lambda *args: pytest.fail("the product gradient ran"))
    x, bias = paddle.randn(shape), paddle.randn([channels])
    bias.stop_gradient = False
    np.testing.assert_array_equal(_bias_run(ours, x, bias)[2], _bias_run(theirs, x, bias)[2])  # below the size
    _no_size_threshold(monkeypatch)
    with paddle.no_grad():
        np.testing.assert_array_equal(ours(x, bias).numpy(), theirs(x, bias).numpy())
    with paddle_kernels():
        np.testing.assert_array_equal(_bias_run(ours, x, bias)[2], _bias_run(theirs, x, bias)[2])
    x64, bias64 = x.astype("float64"), bias.astype("float64")  # not float32: Paddle's add
    np.testing.assert_array_equal(_bias_run(ours, x64, bias64)[2], _bias_run(theirs, x64, bias64)[2])


def test_add_all_equals_chained_adds_with_the_same_gradients(monkeypatch):
    """Bit for bit, values and gradients, also for an input used twice and elsewhere and a frozen
    input; without gradients the inputs may come from a generator."""
    calls = []
    apply = layers._Sum.apply
    monkeypatch.setattr(layers._Sum, "apply", lambda *args: calls.append(1) or apply(*args))
    leaves = [paddle.randn([2, 3, 4, 5]) for _ in range(3)]

    def run(summed):
        for t in leaves[:2]:
            t.stop_gradient = False
        maps = [leaves[0] * 2, leaves[1] * 3, leaves[2]]
        out = summed([maps[0], maps[1], maps[2], maps[0]])
        paddle.seed(1)
        ((out * paddle.randn(out.shape)).sum() + (maps[0] * maps[1]).sum()).backward()
        grads = [t.grad.numpy() for t in leaves[:2]]
        for t in leaves[:2]:
            t.clear_gradient()
        return [out.numpy()] + grads

    got, want = run(add_all), run(lambda ts: ((ts[0] + ts[1]) + ts[2]) + ts[3])
    assert calls == [1]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    with paddle.no_grad():
        np.testing.assert_array_equal(add_all(t for t in leaves).numpy(), (leaves[0] + leaves[1] + leaves[2]).numpy())
    assert calls == [1]


@pytest.mark.parametrize("training", [True, False])
def test_dropout_pointwise_equals_dropout_then_conv(training):
    """The same channels dropped (same seed), outputs and gradients to float rounding; in eval, Paddle's."""
    paddle.seed(0)
    dropout, conv = Dropout2D(0.4), Conv2D(16, 5, 1)
    dropout.train() if training else dropout.eval()
    x = paddle.randn([3, 16, 6, 7])
    x.stop_gradient = False
    conv_calls = []
    conv.register_forward_pre_hook(lambda *args: conv_calls.append(1))
    results = []
    for fn in (layers.dropout_pointwise, lambda t, d, c: c(d(t))):
        paddle.seed(7)
        out = fn(x, dropout, conv)
        (out * paddle.randn(out.shape)).sum().backward()
        results.append((out.numpy(), [t.grad.numpy() for t in (x, conv.weight, conv.bias)]))
        x.clear_gradient()
        conv.clear_gradients()
    (out, grads), (ref, ref_grads) = results
    for got, want in zip([out] + grads, [ref] + ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert (np.abs(grads[0]).sum(axis=(2, 3)) == 0).any() == training  # whole channels dropped
    assert len(conv_calls) == (1 if training else 2)  # training: the folded product, not the layer


@pytest.mark.parametrize("shape", [[2, 5, 3, 4], [1, 5, 3, 4], [2, 1, 3, 4], [2, 5, 1, 4]])
def test_swap_middle_is_the_transpose(shape):
    x = paddle.randn(shape)
    np.testing.assert_array_equal(layers.swap_middle(x).numpy(), x.numpy().transpose(0, 2, 1, 3))


def _linear_pair(bias: bool):
    """segkit's Linear and paddle.nn.Linear with the same parameters."""
    ours, theirs = Linear(5, 7, bias_attr=None if bias else False), nn.Linear(5, 7, bias_attr=None if bias else False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.set_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_paddles(bias, monkeypatch):
    """Same parameter names and shapes; output and input/weight gradients to the bit, the bias
    gradient to float rounding; also for a frozen bias; without gradients (oneDNN) to float rounding."""
    _no_size_threshold(monkeypatch)
    ours, theirs = _linear_pair(bias)
    x = paddle.randn([2, 13, 5])
    (out, grads), (ref, ref_grads) = _run(ours, x), _run(theirs, x)
    np.testing.assert_array_equal(out, ref)
    for got, want in zip(grads[:2], ref_grads[:2]):
        np.testing.assert_array_equal(got, want)
    if bias:
        np.testing.assert_allclose(grads[2], ref_grads[2], rtol=1e-5, atol=1e-6)
        ours.bias.stop_gradient = theirs.bias.stop_gradient = True
        np.testing.assert_array_equal(_run(ours, x)[1][1], _run(theirs, x)[1][1])
    calls = []
    fused = ops.linear
    monkeypatch.setattr(ops, "linear", lambda *args: calls.append(1) or fused(*args))
    with paddle.no_grad():  # one oneDNN product with the bias in its epilogue
        np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-6, atol=1e-6)
    assert calls == [1]


def test_linear_traces_to_paddles_operations():
    """A traced (exported) Linear is Paddle's matmul + add, with no Python layer in the program."""
    layer = Linear(4, 3)
    layer.train()
    static = paddle.jit.to_static(layer, input_spec=[paddle.static.InputSpec([None, 5, 4], "float32")],
                                  full_graph=True)
    ops_traced = [op.name() for op in static.forward.concrete_program.main_program.global_block().ops]
    assert [name for name in ops_traced if not name.startswith(("builtin.", "pd_op.data"))] == \
        ["pd_op.matmul", "pd_op.add"]


def test_dropout2d_matches_paddles_draw_values_and_gradients():
    """With the same seed, the same channels dropped, the same outputs and input gradients to the bit."""
    x = paddle.randn([3, 16, 5, 7])
    results = []
    for layer in (Dropout2D(0.3), nn.Dropout2D(0.3)):
        paddle.seed(7)
        results.append(_run(layer, x))
    (out, grads), (ref, ref_grads) = results
    assert 0 < (ref == 0).mean() < 1
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(grads[0], ref_grads[0])
    layer = Dropout2D(0.3)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_weights_are_paddles(align_corners):
    """The 1-D weights, read back from Paddle's kernel by resizing an identity, equal ours exactly."""
    rng = np.random.default_rng(0)
    for n_in, n_out in [(1, 5), (5, 1), (7, 7), (11, 28), (22, 84), (64, 512), (33, 17)] + \
            [tuple(rng.integers(1, 90, 2)) for _ in range(20)]:
        n_in, n_out = int(n_in), int(n_out)
        eye = paddle.eye(n_in).reshape([1, 1, n_in, n_in])
        along_rows = nn.functional.interpolate(eye, size=[n_out, n_in], mode="bilinear", align_corners=align_corners)
        along_columns = nn.functional.interpolate(eye, size=[n_in, n_out], mode="bilinear",
                                                  align_corners=align_corners)
        np.testing.assert_array_equal(_bilinear_matrix(n_in, n_out, align_corners, rows=True), along_rows[0, 0].numpy())
        np.testing.assert_array_equal(_bilinear_matrix(n_in, n_out, align_corners, rows=False),
                                      along_columns[0, 0].numpy().T)


@pytest.mark.parametrize("way", ["operator", "products"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_bilinear_matches_interpolate(align_corners, way, monkeypatch):
    """Values and input gradients as F.interpolate's to float rounding, for up- and down-sizing: by
    segkit's operator, and by the matrix products where the operators are not built."""
    assert ops.available()
    calls = []
    original = ops.resize_bilinear
    monkeypatch.setattr(ops, "resize_bilinear", lambda *args: calls.append(1) or original(*args))
    if way == "products":
        monkeypatch.setattr(ops, "available", lambda: False)
    rng = np.random.default_rng(1)
    for (h, w), size in [((8, 16), (64, 128)), ((13, 9), (5, 31)), ((1, 1), (4, 6)), ((16, 16), paddle.to_tensor([40, 24]))]:
        x = paddle.to_tensor(rng.standard_normal((2, 3, h, w)).astype("float32"))
        outs, grads = [], []
        for resize in (resize_bilinear, lambda t, s, a: nn.functional.interpolate(t, size=s, mode="bilinear",
                                                                                  align_corners=a)):
            x.clear_gradient()
            x.stop_gradient = False
            out = resize(x, size, align_corners)
            (out * paddle.arange(out.size, dtype="float32").reshape(out.shape)).sum().backward()
            outs.append(out.numpy())
            grads.append(x.grad.numpy() / out.size)
        np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=2e-5)
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    assert len(calls) == (4 if way == "operator" else 0)


def _grads_of(fn, inputs, seed=1):
    """Output and input gradients of ``(fn(*inputs) * weights).sum()`` for fresh copies of ``inputs``."""
    inputs = [t.detach() for t in inputs]
    for t in inputs:
        t.stop_gradient = False
    out = fn(*inputs)
    paddle.seed(seed)
    grads = paddle.grad([(out * paddle.randn(out.shape)).sum()], inputs)
    return [out.numpy()] + [g.numpy() for g in grads]


def _assert_close_to_paddles(fn, inputs, rtol=1e-5):
    """``fn`` through segkit.ops and on Paddle's kernels: output and gradients equal to float rounding."""
    assert ops.available(), "the oneDNN operators must build here (g++, pip install --no-deps onednn-devel)"
    ours = _grads_of(fn, inputs)
    with paddle_kernels():
        theirs = _grads_of(fn, inputs)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("shape", [[2, 3, 50, 64], [7, 1], [4, 300]])
def test_softmax_and_gelu_by_onednn_match_paddle(shape):
    x = paddle.randn(shape) * 4
    _assert_close_to_paddles(softmax, [x])
    _assert_close_to_paddles(gelu, [x])
    _assert_close_to_paddles(GELU(), [x])
    _assert_close_to_paddles(softmax, [x.transpose(list(range(x.ndim))[::-1])])  # a strided view


@pytest.mark.parametrize("shape, epsilon", [([2, 300, 64], 1e-6), ([5, 7, 3, 32], 1e-5), ([1, 160], 1e-5)])
def test_layer_norm_by_onednn_matches_paddle(shape, epsilon):
    """Output and gradients of input, weight and bias (random affine parameters, inputs off zero mean)."""
    paddle.seed(0)
    norm = LayerNorm(shape[-1], epsilon=epsilon)
    norm.weight.set_value(paddle.randn(norm.weight.shape))
    norm.bias.set_value(paddle.randn(norm.bias.shape))
    x = paddle.randn(shape) * 3 + 2
    _assert_close_to_paddles(lambda x, w, b: ops.layer_norm(x, w, b, epsilon) if onednn_applies(x)
                             else nn.functional.layer_norm(x, shape[-1], w, b, epsilon), [x, norm.weight, norm.bias])
    # the layer's own gradients (as training sees them) against paddle.nn.LayerNorm
    theirs = nn.LayerNorm(shape[-1], epsilon=epsilon)
    theirs.set_state_dict(norm.state_dict())
    (out, grads), (ref, ref_grads) = _run(norm, x), _run(theirs, x)
    for got, want in zip([out] + grads, [ref] + ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_onednn_layers_fall_back_where_onednn_does_not_apply(monkeypatch):
    """LayerNorm without bias or over two axes, the tanh GELU, float64 and traced programs: Paddle's kernels."""
    calls = []
    for name in ("softmax", "gelu", "layer_norm"):
        original = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *args, _f=original: calls.append(1) or _f(*args))
    x = paddle.randn([2, 6, 8])
    LayerNorm(8, bias_attr=False)(x)
    LayerNorm([6, 8])(x)
    GELU(approximate=True)(x)
    softmax(x.astype("float64")), gelu(x.astype("float64"))
    paddle.jit.to_static(LayerNorm(8), full_graph=True)(x)
    assert not calls
    LayerNorm(8)(x), GELU()(x), softmax(x)
    assert calls == [1, 1, 1]


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_attention_matches_paddles_scaled_dot_product_attention(dropout_p):
    """Same values, gradients and (seeded) dropout mask as F.scaled_dot_product_attention on [B, N, heads, dim]."""
    q, k, v = paddle.randn([2, 40, 3, 16]), paddle.randn([2, 12, 3, 16]), paddle.randn([2, 12, 3, 16])

    def ours(q, k, v):
        paddle.seed(7)
        return attention(q, k, v, dropout_p=dropout_p, training=True)

    def theirs(q, k, v):
        paddle.seed(7)
        return nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, training=True)

    for got, want in zip(_grads_of(ours, [q, k, v]), _grads_of(theirs, [q, k, v])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
