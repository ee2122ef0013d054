"""Exact fast class maps: bit-equal to the full resize + argmax, while resizing fewer classes."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import segkit.models  # noqa: F401  (registers the models)
from segkit.config import TestConfig
from segkit.engine import class_map
from segkit.engine.class_map import candidate_classes, candidate_ids, exact_argmax, exact_class_map, support_radius
from segkit.engine.export import InferenceNet
from segkit.engine.inference import infer_image, predict_classes
from segkit.models.base import head_resolution
from segkit.registry import MODELS
from segkit.transforms import reverse_transform
from segkit.transforms.compose import reverse_stages


def scene_logits(rng, num_classes, h, w, noise=0.5):
    """Logits like a trained model's: a few classes present, each winning its own region and
    moderately scored elsewhere; absent classes clearly lower; noise on everything."""
    present = rng.choice(num_classes, size=rng.integers(2, 8), replace=False)
    seeds = rng.uniform([0, 0], [h, w], size=(len(present), 2))
    yy, xx = np.mgrid[0:h, 0:w]
    owner = np.argmin([(yy - y) ** 2 + (xx - x) ** 2 for y, x in seeds], axis=0)
    logits = rng.normal(-4, noise, size=(num_classes, h, w)).astype(np.float32)
    logits[present] += 4
    logits[present[owner], yy, xx] += rng.uniform(2, 6)
    return paddle.to_tensor(logits[None])


def full_class_map(logits, finish):
    return paddle.argmax(finish(logits), axis=1)[0].numpy()


CHAINS = [  # (low size, model's final resize, its align_corners, trans_info)
    ((16, 16), (64, 64), False, []),
    ((17, 23), (67, 91), False, [("resize", (50, 120))]),
    ((32, 24), (128, 96), True, [("resize", (131, 97)), ("padding", (120, 90))]),
    ((13, 29), (52, 116), False, [("padding", (50, 110)), ("resize", (41, 75))]),
    ((40, 48), (160, 192), False, [("resize", (250, 300))]),
]


@pytest.mark.parametrize("low, size, align, trans_info", CHAINS)
@pytest.mark.parametrize("num_classes", [19, 150])
def test_fast_class_map_is_bit_equal_on_scenes(low, size, align, trans_info, num_classes):
    rng = np.random.default_rng(num_classes + low[0])

    def finish(t):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=align)
        return reverse_transform(t, trans_info)

    stages = [("resize", size)] + reverse_stages(trans_info, size)
    pruned = 0
    for _ in range(4):
        logits = scene_logits(rng, num_classes, *low)
        assert np.array_equal(exact_class_map(logits, finish, stages), full_class_map(logits, finish))
        pruned += candidate_classes(logits[0].numpy(), support_radius(low, stages)).size < num_classes // 2
    assert pruned == 4  # the fast path ran: most classes were never resized


def test_near_ties_and_exact_ties_keep_the_first_class():
    rng = np.random.default_rng(7)
    logits = scene_logits(rng, 12, 20, 20, noise=1e-6).numpy()
    logits[0, 5] = logits[0, 2]  # exact tie everywhere: argmax must stay with class 2
    logits[0, 9] = np.nextafter(logits[0, 3], np.float32(np.inf))  # one ulp above class 3
    logits = paddle.to_tensor(logits)

    def finish(t):
        return F.interpolate(t, size=(77, 83), mode="bilinear", align_corners=False)

    got = exact_class_map(logits, finish, [("resize", (77, 83))])
    assert np.array_equal(got, full_class_map(logits, finish))
    assert 5 not in np.unique(got)


def test_a_class_that_wins_nowhere_at_low_resolution_can_win_after_the_resize():
    logits = np.full((1, 5, 8, 8), -9.0, dtype=np.float32)
    logits[0, 1, :, :4], logits[0, 1, :, 4:] = 10.0, 0.0  # class 1 left, class 3 right ...
    logits[0, 3, :, :4], logits[0, 3, :, 4:] = 0.0, 10.0
    logits[0, 2] = 8.0  # ... and class 2 second everywhere, first where they blend
    logits = paddle.to_tensor(logits)

    def finish(t):
        return F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)

    got = exact_class_map(logits, finish, [("resize", (32, 32))])
    assert np.array_equal(got, full_class_map(logits, finish))
    assert set(np.unique(got)) == {1, 2, 3}


def test_random_logits_of_any_scale_are_bit_equal():
    rng = np.random.default_rng(3)
    for scale in (1e-3, 1.0, 1e4):
        logits = paddle.to_tensor((rng.normal(size=(1, 40, 9, 11)) * scale).astype(np.float32))

        def finish(t):
            return reverse_transform(F.interpolate(t, size=(37, 45), mode="bilinear"), [("resize", (30, 61))])

        stages = [("resize", (37, 45)), ("resize", (30, 61))]
        assert np.array_equal(exact_class_map(logits, finish, stages), full_class_map(logits, finish))


def test_no_bound_when_a_resize_reads_a_grid_coarser_than_the_logits():
    assert support_radius((32, 32), [("resize", (128, 128)), ("resize", (16, 200)), ("resize", (50, 50))]) is None
    assert support_radius((32, 32), [("resize", (128, 128)), ("resize", (16, 200))]) == 2  # the last may shrink
    assert support_radius((32, 32), [("padding", (30, 32)), ("resize", (64, 64))]) == 1  # crops move no pixel
    assert support_radius((32, 32), [("padding", (30, 32))]) == 0


def full_argmax(logits, size, align):
    """The former argmax output op of exports: every class resized, then argmax (int32 [N, 1, H, W])."""
    return paddle.argmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=align), axis=1,
                         keepdim=True, dtype="int32").numpy()


@pytest.mark.parametrize("align", [False, True])
def test_exact_argmax_of_exports_is_bit_equal_on_batches_ties_and_non_finite_scores(align):
    rng = np.random.default_rng(11)
    for low, size in (((16, 16), (64, 64)), ((9, 13), (70, 110)), ((1, 5), (3, 19))):
        batch = paddle.concat([scene_logits(rng, 150, *low) for _ in range(2)])
        ties = batch.numpy()
        ties[1, 7] = ties[1, ties[1].max(axis=(1, 2)).argmax()]  # class 7 ties the strongest class of image 1
        for logits in (batch, paddle.to_tensor(ties), paddle.to_tensor(np.round(ties))):
            assert np.array_equal(exact_argmax(logits, size, align).numpy(), full_argmax(logits, size, align))
        assert candidate_ids(batch).shape[0] < 20  # the classes of the two scenes, not all 150
    for bad in (np.nan, np.inf, -np.inf):
        logits = rng.normal(size=(1, 6, 5, 7)).astype(np.float32)
        logits[0, 2, 1, 3] = bad
        logits = paddle.to_tensor(logits)
        assert candidate_ids(logits).numpy().tolist() == list(range(6))
        assert np.array_equal(exact_argmax(logits, (20, 28), align).numpy(), full_argmax(logits, (20, 28), align))


def test_subnormal_logits_that_the_resize_rounds_to_a_tie_keep_the_first_class():
    logits = np.zeros((1, 2, 2, 2), dtype=np.float32)
    logits[0, 1] = np.nextafter(np.float32(0), np.float32(1))  # the smallest subnormal: halved, it rounds to 0
    logits = paddle.to_tensor(logits)

    def finish(t):
        return F.interpolate(t, size=(5, 9), mode="bilinear", align_corners=True)

    reference = full_class_map(logits, finish)
    assert (reference == 0).any()  # class 0 wins where class 1 was rounded to 0: no relative allowance covers it
    assert np.array_equal(exact_class_map(logits, finish, [("resize", (5, 9))]), reference)
    assert np.array_equal(exact_argmax(logits, (5, 9), True).numpy()[:, 0], reference[None])


def test_the_graph_candidates_of_one_resize_are_among_the_numpy_ones():
    rng = np.random.default_rng(12)
    for _ in range(3):  # the graph's 2x2 blocks are tighter than the 3x3 windows, never looser
        logits = scene_logits(rng, 60, 15, 21)
        graph, windows = candidate_ids(logits).numpy(), candidate_classes(logits[0].numpy(), 1)
        assert set(graph) <= set(windows) and 0 < graph.size


FAMILIES = ["segformer_b0", "rtformer_slim", "segnext_t", "hrvit_b1"]
MODES = {
    "whole": TestConfig(),
    "slide": TestConfig(is_slide=True, crop_size=[40, 32], stride=[24, 16]),
    "aug": TestConfig(aug_eval=True, scales=[0.75, 1.25], flip_horizontal=True),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_and_mode_predicts_the_same_classes(name, monkeypatch):
    paddle.seed(0)
    model = MODELS.get(name)(num_classes=150)
    model.eval()
    image = paddle.randn([1, 3, 48, 64])
    trans_info = [("resize", (57, 71)), ("padding", (45, 60))]
    resized = []
    original = class_map.candidate_classes
    monkeypatch.setattr(class_map, "candidate_classes", lambda *a: resized.append(original(*a)) or resized[-1])
    for mode, cfg in MODES.items():
        paddle.seed(1)  # SegNeXt's eval NMF draws random bases
        reference = paddle.argmax(infer_image(model, image, trans_info, cfg), axis=1)[0].numpy()
        paddle.seed(1)
        fast = predict_classes(model, image, trans_info, cfg)
        assert fast.dtype == reference.dtype and np.array_equal(fast, reference), (name, mode)
    assert len(resized) == 1 and resized[0].size < 150  # whole-image inference resized fewer classes
    batch = paddle.randn([2, 3, 48, 64])  # the exports' argmax output op, in dygraph, at the head's resolution
    paddle.seed(1)
    reference = paddle.argmax(model(batch), axis=1, keepdim=True, dtype="int32").numpy()
    with head_resolution(model):
        paddle.seed(1)
        assert np.array_equal(InferenceNet(model, "argmax")(batch).numpy(), reference), name


def test_head_resolution_only_in_eval():
    paddle.seed(0)
    model = MODELS.get("segformer_b0")(num_classes=5)
    image = paddle.randn([1, 3, 64, 64])
    model.eval()
    with head_resolution(model) as supported:
        assert supported and model(image).shape == [1, 5, 16, 16]
        model.train()
        assert model(image)[0].shape == [1, 5, 64, 64]
    model.eval()
    assert model(image).shape == [1, 5, 64, 64]


def test_a_model_without_a_final_resize_is_handled():
    conv = paddle.nn.Conv2D(3, 7, 1)
    conv.eval()
    image = paddle.randn([1, 3, 20, 30])
    trans_info = [("resize", (41, 59))]
    reference = paddle.argmax(infer_image(conv, image, trans_info, TestConfig()), axis=1)[0].numpy()
    assert np.array_equal(predict_classes(conv, image, trans_info, TestConfig()), reference)
