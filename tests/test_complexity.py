"""MACs and parameter counts (segkit.complexity, tools/analyze_model.py) against hand-computed figures."""

import os
import paddle
import paddle.nn.functional as F
import pytest
from conftest import ROOT
from paddle import nn

import analyze_model
from segkit.complexity import count_macs


class Mixed(nn.Layer):
    """One of each counted kind, with MACs worked out by hand in the test."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2D(8, 8, 5, padding=2, groups=8)
        self.linear = nn.Linear(8, 6)
        self.kernel = self.create_parameter([4, 8, 1, 1])

    def forward(self, x):
        y = self.depthwise(self.conv(x))  # [1, 8, 10, 12]
        tokens = self.linear(y.flatten(2).transpose([0, 2, 1]))  # [1, 120, 6]
        gram = paddle.matmul(tokens, tokens, transpose_x=True)  # [1, 6, 6], contracting 120
        q = tokens.reshape([1, 120, 2, 3])  # [B, N, heads, d]
        attended = F.scaled_dot_product_attention(q, q, q)
        return F.conv2d(y, self.kernel), gram, attended @ paddle.ones([3, 2])


def test_every_kind_of_product_is_counted_once_by_hand():
    result = count_macs(Mixed(), [1, 3, 10, 12])
    pixels = 10 * 12
    assert result.macs == {
        "conv": pixels * 8 * 3 * 9,
        "depthwise": pixels * 8 * 1 * 25,
        "linear": pixels * 6 * 8,  # F.linear inside nn.Linear is not counted again
        "": 6 * 6 * 120 + 2 * (120 * 120 * 3) * 2 + pixels * 4 * 8 + pixels * 2 * 2 * 3,
    }
    assert sum(result.params.values()) == (8 * 3 * 9 + 8) + (8 * 25 + 8) + (8 * 6 + 6) + 4 * 8


def test_parts_hold_every_mac_and_parameter_once():
    result = count_macs(Mixed(), [1, 3, 10, 12])
    rows = result.by_layer(1)
    assert sum(r[1] for r in rows) == result.total_macs
    assert sum(r[2] for r in rows) == sum(result.params.values())


def test_counting_leaves_paddle_and_the_model_as_they_were():
    model = Mixed()
    model.train()
    matmul = paddle.matmul
    count_macs(model, [1, 3, 10, 12])
    assert paddle.matmul is matmul and model.training
    assert not model.conv._forward_pre_hooks and not model.conv._forward_post_hooks


@pytest.mark.timeout(300)
def test_segformer_b0_and_hrvit_b1_match_the_published_counts(capsys):
    analyze_model.main(["--config", os.path.join(ROOT, "configs/segformer/segformer_b0_ade20k_512x512_160k.yml"),
                        "--input_shape", "1", "3", "512", "512"])
    out = capsys.readouterr().out
    assert "4.13 GMACs" in out and "3,752,694 trainable parameters" in out  # segkit's folded decoder
    assert "| backbone.stages.0 |" in out and "| head |" in out
    analyze_model.main(["--config", os.path.join(ROOT, "configs/hrvit/hrvit_b1_ade20k_512x512_160k.yml"),
                        "--backbone_only", "--depth", "1"])
    assert "10.59 GMACs" in capsys.readouterr().out  # the official code's count for the b1 backbone


def test_bad_shape_is_one_clear_message(capsys):
    from _common import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: analyze_model.main(["--config", os.path.join(ROOT, "configs/segformer/segformer_b0_ade20k_512x512_160k.yml"),
                                            "--input_shape", "1", "3", "0", "512"]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--input_shape" in err and "Traceback" not in err
