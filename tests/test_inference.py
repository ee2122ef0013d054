"""Whole / slide / multi-scale + flip inference agree where they must, and map back to the original size."""

import numpy as np
import paddle
import pytest
from paddle import nn

from segkit.config import TestConfig
from segkit.engine.inference import aug_inference, flip_variants, infer_image, slide_inference, slide_windows
from segkit.models.base import SegModel
from segkit.transforms import Compose
from segkit.transforms.geometric import Padding, Resize

NUM_CLASSES = 4


class PixelModel(SegModel):
    """A per-pixel "model": a 1x1 convolution, so its output at a pixel ignores the input's size."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        self.classifier = nn.Conv2D(3, num_classes, 1)

    def forward(self, x):
        return self.outputs([self.classifier(x)])


class PositionModel(PixelModel):
    """Per-pixel logits plus a left-to-right ramp: not flip-equivariant, so a wrong flip-back shows."""

    def forward(self, x):
        width = x.shape[-1]
        ramp = paddle.linspace(0.0, 3.0, width).reshape([1, 1, 1, width])
        return self.outputs([self.classifier(x) + ramp * paddle.arange(self.num_classes, dtype="float32").reshape([1, -1, 1, 1])])


class ShapeSpy(PixelModel):
    """Records the shape of every input it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return super().forward(x)


@pytest.fixture(scope="module")
def model():
    paddle.seed(7)
    return PixelModel().eval()


def image(height: int, width: int, seed: int = 0) -> paddle.Tensor:
    return paddle.to_tensor(np.random.default_rng(seed).normal(size=(1, 3, height, width)).astype("float32"))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- sliding windows ---------------------------------------------------------------------------

@pytest.mark.parametrize("height,width,crop,stride", [
    (1024, 2048, (1024, 1024), (768, 768)),
    (37, 53, (16, 20), (7, 9)),  # sizes not divisible by crop or stride
    (20, 30, (64, 64), (32, 32)),  # image smaller than the window
    (64, 64, (64, 64), (64, 64)),  # exactly one window
    (50, 41, (41, 7), (41, 3)),
])
def test_windows_cover_every_pixel_and_stay_inside(height, width, crop, stride):
    coverage = np.zeros((height, width), np.int64)
    for top, bottom, left, right in slide_windows(height, width, crop, stride):
        assert 0 <= top < bottom <= height and 0 <= left < right <= width
        assert (bottom - top, right - left) == (min(crop[1], height), min(crop[0], width))
        coverage[top:bottom, left:right] += 1
    assert coverage.min() >= 1


def test_cityscapes_windows_are_the_expected_three():
    # 2048 wide, 1024 windows, stride 768: x = 0, 768, then the last one is pulled back to end at 2048.
    assert list(slide_windows(1024, 2048, (1024, 1024), (768, 768))) == [
        (0, 1024, 0, 1024), (0, 1024, 768, 1792), (0, 1024, 1024, 2048)]


@pytest.mark.parametrize("height,width,crop,stride", [
    (37, 53, (16, 20), (7, 9)),
    (40, 40, (16, 16), (16, 16)),  # no overlap
    (33, 47, (32, 32), (8, 24)),
    (20, 30, (64, 64), (32, 32)),  # image smaller than the window
    (25, 61, (61, 25), (10, 10)),  # window as large as the image
])
def test_slide_equals_whole_for_a_size_independent_model(model, height, width, crop, stride):
    x = image(height, width)
    with paddle.no_grad():
        whole = model(x).numpy()
    slid = slide_inference(model, x, crop, stride).numpy()
    assert slid.shape == (1, NUM_CLASSES, height, width)
    np.testing.assert_allclose(slid, whole, rtol=1e-5, atol=1e-5)


def test_slide_averages_overlaps_by_coverage():
    """A model returning all ones gives exactly one everywhere: the sum is divided by the coverage."""

    class Ones(PixelModel):
        def forward(self, x):
            return self.outputs([paddle.ones([x.shape[0], self.num_classes, *x.shape[2:]])])

    out = slide_inference(Ones().eval(), image(37, 53), (16, 20), (5, 7)).numpy()
    np.testing.assert_array_equal(out, np.ones_like(out))


def test_slide_feeds_the_model_one_window_at_a_time():
    spy = ShapeSpy().eval()
    slide_inference(spy, image(40, 70), (32, 24), (16, 16))
    assert len(spy.seen) == len(list(slide_windows(40, 70, (32, 24), (16, 16))))
    assert set(spy.seen) == {(1, 3, 24, 32)}


# ---- flips and scales --------------------------------------------------------------------------

def test_flipping_twice_is_the_identity():
    x = image(7, 11)
    for axes in ([2], [3], [2, 3]):
        np.testing.assert_array_equal(paddle.flip(paddle.flip(x, axes), axes).numpy(), x.numpy())


def test_flip_variants_follow_the_config():
    assert flip_variants(TestConfig()) == [[]]
    assert flip_variants(TestConfig(aug_eval=True, flip_horizontal=True, flip_vertical=True)) == [[], [3], [2]]


def test_flipped_copies_are_flipped_back_before_they_are_added():
    paddle.seed(3)
    positional = PositionModel().eval()
    x = image(9, 13)
    cfg = TestConfig(aug_eval=True, flip_horizontal=True, flip_vertical=True)
    got = aug_inference(positional, x, cfg).numpy()
    xs = x.numpy()
    with paddle.no_grad():
        plain = positional(x).numpy()
        horizontal = positional(paddle.to_tensor(xs[..., ::-1].copy())).numpy()[..., ::-1]
        vertical = positional(paddle.to_tensor(xs[:, :, ::-1].copy())).numpy()[:, :, ::-1]
    expected = softmax(plain) + softmax(horizontal) + softmax(vertical)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_scale_one_plus_flips_equals_whole_for_a_per_pixel_model(model):
    x = image(21, 34)
    with paddle.no_grad():
        whole = softmax(model(x).numpy())
    cfg = TestConfig(aug_eval=True, scales=[1.0], flip_horizontal=True, flip_vertical=True)
    got = aug_inference(model, x, cfg).numpy()
    np.testing.assert_allclose(got, 3 * whole, rtol=1e-5, atol=1e-6)
    # and the argmax is the whole-image argmax
    np.testing.assert_array_equal(got.argmax(1), whole.argmax(1))


@pytest.mark.parametrize("height,width", [(37, 53), (64, 48), (5, 9)])
def test_scales_map_back_to_the_original_size_exactly(model, height, width):
    cfg = TestConfig(aug_eval=True, scales=[0.5, 0.75, 1.25, 1.75], flip_horizontal=True)
    out = aug_inference(model, image(height, width), cfg)
    assert tuple(out.shape) == (1, NUM_CLASSES, height, width)


def test_scaled_copies_of_a_flat_image_agree_with_whole(model):
    """A one-colour image stays that colour at any scale, so every copy must give the same probabilities."""
    x = paddle.ones([1, 3, 23, 31]) * paddle.to_tensor([0.3, -1.2, 0.8]).reshape([1, 3, 1, 1])
    with paddle.no_grad():
        whole = softmax(model(x).numpy())
    cfg = TestConfig(aug_eval=True, scales=[0.5, 1.0, 1.5], flip_horizontal=True)
    np.testing.assert_allclose(aug_inference(model, x, cfg).numpy(), 6 * whole, rtol=1e-5, atol=1e-5)


def test_slide_inside_multi_scale(model):
    x = image(40, 56)
    cfg = TestConfig(aug_eval=True, scales=[0.75, 1.0], flip_horizontal=True, is_slide=True, crop_size=[24, 16], stride=[12, 8])
    plain = TestConfig(aug_eval=True, scales=[0.75, 1.0], flip_horizontal=True)
    np.testing.assert_allclose(aug_inference(model, x, cfg).numpy(), aug_inference(model, x, plain).numpy(), rtol=1e-5, atol=1e-5)


# ---- back to the original image ----------------------------------------------------------------

@pytest.mark.parametrize("ops,size", [
    ([Resize(target_size=(64, 32))], (45, 70)),
    ([Padding(target_size=(80, 64))], (45, 70)),
    ([Resize(target_size=(40, 40)), Padding(target_size=(48, 56))], (45, 70)),
    ([Padding(target_size=(72, 50)), Resize(target_size=(30, 20))], (45, 70)),
])
@pytest.mark.parametrize("cfg", [
    TestConfig(),
    TestConfig(is_slide=True, crop_size=[24, 24], stride=[16, 16]),
    TestConfig(aug_eval=True, scales=[0.75, 1.25], flip_vertical=True),
], ids=["whole", "slide", "aug"])
def test_infer_image_returns_the_original_size(model, ops, size, cfg):
    rgb = np.random.default_rng(1).integers(0, 255, (*size, 3), dtype=np.uint8)
    data = Compose(ops)({"img": rgb, "trans_info": []})
    assert tuple(data["img"].shape[1:]) != size  # the transforms did change the size
    out = infer_image(model, paddle.to_tensor(data["img"][None]), data["trans_info"], cfg)
    assert tuple(out.shape) == (1, NUM_CLASSES, *size)


def test_padding_is_cut_off_not_resized(model):
    """Undoing a padding keeps the top-left pixels as they are: logits there equal the unpadded ones."""
    rgb = np.random.default_rng(2).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    plain = Compose([])({"img": rgb.copy(), "trans_info": []})
    padded = Compose([Padding(target_size=(32, 48))])({"img": rgb.copy(), "trans_info": []})
    a = infer_image(model, paddle.to_tensor(plain["img"][None]), plain["trans_info"], TestConfig()).numpy()
    b = infer_image(model, paddle.to_tensor(padded["img"][None]), padded["trans_info"], TestConfig()).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# ---- evaluation reads and infers one image at a time -------------------------------------------

class EventDataset:
    """Three small samples; records when each is read."""

    num_classes = NUM_CLASSES
    ignore_index = 255

    def __init__(self, events):
        self.events = events

    def __len__(self):
        return 3

    def __getitem__(self, idx):
        self.events.append(f"read {idx}")
        rng = np.random.default_rng(idx)
        return {"img": rng.normal(size=(3, 12, 20)).astype("float32"), "label": rng.integers(0, NUM_CLASSES, (12, 20)),
                "img_path": f"{idx}.png", "trans_info": []}


def test_evaluate_reads_no_image_ahead_and_feeds_one_at_a_time():
    from segkit.engine.evaluate import evaluate

    events = []

    class Spy(PixelModel):
        def forward(self, x):
            events.append(f"infer {tuple(x.shape)}")
            return super().forward(x)

    result = evaluate(Spy().eval(), EventDataset(events), TestConfig(), print_detail=False)
    assert events == ["read 0", "infer (1, 3, 12, 20)", "read 1", "infer (1, 3, 12, 20)", "read 2", "infer (1, 3, 12, 20)"]
    assert result["num_images"] == 3 and result["confusion_matrix"].sum() == 3 * 12 * 20
