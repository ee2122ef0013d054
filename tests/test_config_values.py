"""Values, not only keys, are checked when a config is loaded: each bad file or value stops
tools/train.py (its ``main`` under the tools' error handler, in this process) with exit status 2 and
one message naming the file and the dotted key, before any work."""

import pytest
from conftest import QUICKSTART, tiny_opts

import train as train_tool
from _common import run_cli


def run_train(argv, capsys):
    """tools/train.py with ``argv`` as a user runs it; returns (exit status, stderr)."""
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: train_tool.main(argv))
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("opt, message", [
    ("train_dataset.transforms.1.crop_size=[0,0]",
     "train_dataset.transforms.1.crop_size: expected positive sizes in pixels, got [0, 0]"),
    ("lr_scheduler.learning_rate=-0.1", "lr_scheduler.learning_rate: expected a positive learning rate, got -0.1"),
    ("model.num_classes=-1", "model.num_classes: expected a positive number of classes, got -1"),
    ("model.backbone.drop_path_rate=high", "model.backbone.drop_path_rate: mit_b0.drop_path_rate expects a number, got 'high' (str)"),
    ("lr_scheduler.learning_rate=1e-4", "write 1.0e-4"),
    ("model.num_classes=2.5", "model.num_classes: SegFormer.num_classes expects an integer, got 2.5"),
], ids=["crop 0", "negative lr", "num_classes -1", "string for number", "1e-4 is text", "float for int"])
def test_bad_values_are_refused_at_load_naming_the_key(opt, message, capsys, tmp_path):
    code, err = run_train(["--config", QUICKSTART, "--save_dir", str(tmp_path), "--opts", opt], capsys)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "config.yml").exists()  # stopped before any work


BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9 if i else ['x'] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("text, message", [
    ("_base_: {base}\nbatch_size: 2\niters: 3\nbatch_size: 4\n", "line 4: key 'batch_size' appears twice in one mapping"),
    ("_base_: {base}\n" + BOMB, "aliases (*name) expand to more than 100000 values"),
    ("_base_: {base}\nx: " + "[" * 1000 + "]" * 1000 + "\n", "nested more than 50 levels deep"),
    ("_base_: {base}\n# caf\xe9\n", "not UTF-8 text"),
], ids=["duplicate key", "alias bomb", "deep nesting", "not UTF-8"])
def test_bad_yaml_files_are_refused_without_expanding_them(text, message, capsys, tmp_path):
    path = tmp_path / "bad.yml"
    path.write_bytes(text.format(base=QUICKSTART).encode("latin-1"))
    code, err = run_train(["--config", str(path), "--save_dir", str(tmp_path / "out")], capsys)
    assert code == 2 and f"{path}" in err and message in err and "Traceback" not in err, err


def test_a_batch_larger_than_the_training_set_is_a_clear_error(scenes_root, capsys, tmp_path):
    opts = tiny_opts(scenes_root, iters=1) + ["batch_size=1000"]
    code, err = run_train(["--config", QUICKSTART, "--save_dir", str(tmp_path), "--opts", *opts], capsys)
    assert code == 2 and "fewer than one global batch" in err and "Lower batch_size" in err and "Traceback" not in err
