"""Crashes lose nothing: tools/train.py stopped by SIGINT or SIGTERM, a second run into the same
save_dir, a fresh run over an earlier run's checkpoints, a damaged newest checkpoint, a failed write
and a damaged image mid-run, each as a user meets it."""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
from cli import TIMEOUT, make_case, processes_naming, run_side_by_side, tool
from conftest import QUICKSTART, ROOT, tiny_opts

from segkit.engine import checkpoints
from segkit.errors import CheckpointError


def start_argv(save_dir, scenes_root, *flags, iters=40):
    """tools/train.py writing a checkpoint at every iteration of a tiny run."""
    return tool("train.py", "--config", QUICKSTART, "--save_dir", save_dir, "--save_interval", 1, "--log_iters", 1,
                *flags, "--opts", *tiny_opts(scenes_root, iters=iters, crop=32))


def start(save_dir, scenes_root, *flags, iters=40):
    """``start_argv`` in a session of its own, so that a signal can go to its whole process group."""
    return subprocess.Popen(start_argv(save_dir, scenes_root, *flags, iters=iters), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_checkpoint(save_dir, proc, name="iter_2"):
    end = time.time() + TIMEOUT
    while not os.path.isdir(os.path.join(save_dir, name)):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < end, f"no {name} after {TIMEOUT} s"
        time.sleep(0.05)


def leftovers(save_dir):
    return [n for n in os.listdir(save_dir) if n.startswith(".")]


@pytest.mark.timeout(3 * TIMEOUT)
def test_signals_stop_cleanly_the_lock_refuses_a_second_run_and_resume_falls_back(scenes_root, tmp_path):
    runs = {sig: str(tmp_path / sig.name) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C in a terminal (and `timeout`, or a batch scheduler's SIGTERM) signals the whole process
    # group: the data-loading workers too. Before segkit stopped its workers itself, one left to
    # interpreter exit ended the run with a SystemError traceback, in about half of the runs.
    procs = {signal.SIGINT: start(runs[signal.SIGINT], scenes_root, "--num_workers", 2),
             signal.SIGTERM: start(runs[signal.SIGTERM], scenes_root, "--num_workers", 1)}
    try:
        for sig, proc in procs.items():
            wait_for_checkpoint(runs[sig], proc, "iter_3")
        second = subprocess.run(tool("train.py", "--config", QUICKSTART, "--save_dir", runs[signal.SIGINT],
                                     "--resume_model", "auto", "--opts", *tiny_opts(scenes_root)),
                                cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
        for sig, proc in procs.items():
            os.killpg(proc.pid, sig)
        outputs = {sig: proc.communicate(timeout=TIMEOUT)[0] for sig, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    # The second run was refused, naming the process that holds the save_dir.
    pid = procs[signal.SIGINT].pid
    assert second.returncode == 2 and f"being written by another training (pid {pid} " in second.stderr, second.stderr
    for sig, out in outputs.items():
        assert procs[sig].returncode == 128 + sig, out[-3000:]
        assert f"{sig.name} received: training stopped cleanly" in out and "--resume_model auto" in out, out[-3000:]
        assert "Traceback" not in out and "SystemError" not in out, out[-3000:]
        assert processes_naming(runs[sig], grace_s=0) == [], "loader workers outlived the run"
        assert leftovers(runs[sig]) == [], leftovers(runs[sig])  # no temporary folder, no lock
        newest = checkpoints.iteration_folders(runs[sig])[-1]
        assert f"The last checkpoint is {newest}" in out
    # The newest checkpoint is damaged (a truncated optimizer state): auto resumes from the one before.
    save_dir = runs[signal.SIGINT]
    folders = checkpoints.iteration_folders(save_dir)
    with open(os.path.join(folders[-1], "model.pdopt"), "r+b") as f:
        f.truncate(100)
    finished = subprocess.run(tool("train.py", "--config", QUICKSTART, "--save_dir", save_dir, "--resume_model", "auto",
                                   "--save_interval", 100, "--opts", *tiny_opts(scenes_root, iters=len(folders) + 1,
                                                                                crop=32)),
                              cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    out = finished.stdout + finished.stderr
    assert finished.returncode == 0, out[-3000:]
    assert f"skipping {folders[-1]}" in out and f"Resumed from {folders[-2]}" in out, out[-3000:]


def run_train(argv, capsys):
    import train as train_tool
    from _common import run_cli

    with pytest.raises(SystemExit) as info:
        run_cli(lambda: train_tool.main(argv))
    return info.value.code, capsys.readouterr().err


def test_save_dir_that_is_a_file_or_holds_another_run_is_refused(scenes_root, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    code, err = run_train(["--config", QUICKSTART, "--save_dir", str(a_file), "--opts", *tiny_opts(scenes_root)], capsys)
    assert code == 2 and f"--save_dir {a_file} is a file" in err
    earlier = tmp_path / "run"
    (earlier / "iter_8").mkdir(parents=True)
    for name in checkpoints.FILES:
        (earlier / "iter_8" / name).write_bytes(b"x")
    argv = ["--config", QUICKSTART, "--save_dir", str(earlier), "--save_interval", "1", "--opts",
            *tiny_opts(scenes_root, iters=1, crop=32)]
    code, err = run_train(argv, capsys)
    assert code == 2 and "holds checkpoints of an earlier run (iter_8)" in err and "--overwrite" in err
    assert (earlier / "iter_8").is_dir()  # untouched
    code, _ = run_train(argv + ["--overwrite"], capsys)
    assert code == 0 and sorted(p.name for p in earlier.glob("iter_*")) == ["iter_1"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = str(tmp_path / "iter_4")
    checkpoints.atomic_save_dir(target, {"model.pdparams": {"w": np.ones(3, np.float32)}})
    real_save = paddle.save

    def disk_full(obj, path, *args, **kwargs):
        if path.endswith("model.pdopt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous iter_4 is intact"):
        checkpoints.atomic_save_dir(target, {"model.pdparams": {"w": np.zeros(3, np.float32)}, "model.pdopt": {}})
    assert os.listdir(tmp_path) == ["iter_4"]  # no temporary folder left
    np.testing.assert_array_equal(paddle.load(os.path.join(target, "model.pdparams"))["w"].numpy(), np.ones(3))


@pytest.mark.timeout(2 * TIMEOUT)
def test_a_damaged_image_mid_run_stops_and_the_last_checkpoint_resumes(tmp_path):
    from segkit.config import load_config
    from segkit.engine.sampler import TrainSampler

    config, _ = make_case(tmp_path, "data", "train", None)
    files = load_config(config).build_dataset("train").file_list
    second = files[TrainSampler(len(files), 1, seed=0).batch(1)[0][1]][0]  # the image of iteration 2
    good = open(second, "rb").read()
    open(second, "wb").close()  # zero bytes, as a copy cut short leaves it
    save_dir = tmp_path / "run"
    argv = ["--config", config, "--save_dir", save_dir, "--save_interval", 1, "--batch_size", 1, "--iters", 3]
    stopped = run_side_by_side({"damaged": tool("train.py", *argv)})["damaged"]
    assert stopped[0] == 2 and f"{second} is empty (0 bytes)" in stopped[1] and "Traceback" not in stopped[1]
    assert [os.path.basename(f) for f in checkpoints.iteration_folders(save_dir)] == ["iter_1"]
    with open(second, "wb") as f:
        f.write(good)
    resumed = run_side_by_side({"fixed": tool("train.py", *argv, "--resume_model", "auto")})["fixed"]
    assert resumed[0] == 0 and f"Resumed from {save_dir / 'iter_1'}" in resumed[1], resumed[1][-3000:]


def quickstart_weights(path):
    """Save weights for the quickstart model at ``path``; returns the path."""
    from segkit.config import load_config

    paddle.save(load_config(QUICKSTART).build_model(pretrained=False).state_dict(), str(path))
    return str(path)


def wait_for_text(log, text, proc):
    end = time.time() + TIMEOUT
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < end, f"no {text!r} after {TIMEOUT} s"
        time.sleep(0.05)


@pytest.mark.timeout(2 * TIMEOUT)
def test_val_and_predict_stop_on_a_signal_with_one_line(scenes_root, tmp_path):
    """SIGTERM met Paddle's C++ handler (a C++ stack), Ctrl-C a KeyboardInterrupt traceback."""
    opts = ["--opts", *tiny_opts(scenes_root)]
    common = ["--config", QUICKSTART, "--model_path", quickstart_weights(tmp_path / "model.pdparams")]
    runs = {  # name: (argv, signal, to the whole process group, the text that shows it is at work)
        "val.py": (tool("val.py", *common, "--num_workers", 2, "--save_dir", tmp_path / "val", *opts),
                   signal.SIGINT, True, "Loaded "),
        "predict.py": (tool("predict.py", *common, "--image_path", os.path.join(scenes_root, "images", "val"),
                            "--save_dir", tmp_path / "predict", *opts), signal.SIGTERM, False, "Loaded "),
    }
    procs, logs = {}, {}
    try:
        for name, (argv, _, _, _) in runs.items():
            logs[name] = tmp_path / f"{name}.log"
            procs[name] = subprocess.Popen(argv, cwd=ROOT, stdout=logs[name].open("w"), stderr=subprocess.STDOUT,
                                           start_new_session=True)
        for name, (_, sig, group, ready) in runs.items():
            wait_for_text(logs[name], ready, procs[name])
            time.sleep(1.0)  # into the images
            os.killpg(procs[name].pid, sig) if group else procs[name].send_signal(sig)
        codes = {name: proc.wait(timeout=TIMEOUT) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    for name, (_, sig, _, _) in runs.items():
        out = logs[name].read_text()
        assert codes[name] == 128 + sig, out[-3000:]
        assert out.rstrip().endswith(f"error: {sig.name} received: {name} stopped."), out[-3000:]
        assert "Traceback" not in out and "SystemError" not in out, out[-3000:]
    assert processes_naming(tmp_path, grace_s=0) == [], "loader workers outlived the run"


def without_root_override():
    """The command prefix that makes a root process obey file permissions (as CI and this machine run
    as root): setpriv drops CAP_DAC_OVERRIDE; nothing for an ordinary user."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): a read-only folder cannot be made here")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.timeout(2 * TIMEOUT)
def test_a_read_only_save_dir_is_refused_up_front_and_mid_run_keeps_the_checkpoints(scenes_root, tmp_path):
    prefix = without_root_override()
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    mid_run = tmp_path / "mid_run"
    weights = quickstart_weights(tmp_path / "model.pdparams")
    opts = ["--opts", *tiny_opts(scenes_root)]
    infer = ["--config", QUICKSTART, "--model_path", weights, "--save_dir", read_only]
    commands = {
        "train.py": tool("train.py", "--config", QUICKSTART, "--save_dir", read_only, *opts),
        "val.py": tool("val.py", *infer, *opts),
        "predict.py": tool("predict.py", *infer, "--image_path", os.path.join(scenes_root, "images", "val"), *opts),
    }
    training = subprocess.Popen(prefix + start_argv(mid_run, scenes_root), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        results = run_side_by_side({name: prefix + argv for name, argv in commands.items()})
        wait_for_checkpoint(str(mid_run), training, "iter_2")
        mid_run.chmod(0o555)  # the disk or the folder turns read-only during the run
        out = training.communicate(timeout=TIMEOUT)[0]
    finally:
        training.kill()
        mid_run.chmod(0o755)
    for name, (code, err) in results.items():
        assert code == 2 and f"--save_dir {read_only} cannot be written (Permission denied)" in err, f"{name}: {err[-3000:]}"
        assert "Traceback" not in err, err[-3000:]
    assert os.listdir(read_only) == []
    assert training.returncode == 2 and "could not write checkpoint" in out and "Permission denied" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    newest = checkpoints.iteration_folders(str(mid_run))[-1]
    checkpoints.load_checkpoint(newest)  # complete and readable
    leftovers = [n for n in os.listdir(mid_run) if ".tmp" in n or ".old" in n]
    assert not [n for n in leftovers if ".old" in n], leftovers  # a failed rename put the previous folder back
    # A save that made its temporary folder just before the folder turned read-only cannot remove it
    # (that needs write permission on the folder): the next run's tidy-up does, as after a kill.
    checkpoints.clean_interrupted(str(mid_run))
    assert not [n for n in os.listdir(mid_run) if ".tmp" in n or ".old" in n]


def rank_pid(save_dir, rank):
    """The pid of the training rank ``rank`` that writes into ``save_dir``, or None."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:  # ended meanwhile, or not ours
            continue
        if str(save_dir).encode() in argv and b"-m" not in argv and f"PADDLE_TRAINER_ID={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.timeout(TIMEOUT)
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_iteration(scenes_root, tmp_path):
    """Under paddle.distributed.launch only rank 1 is signalled; rank 0 learns of it in the per-iteration
    all-reduce, so both stop after the same iteration and none waits in a collective."""
    save_dir = tmp_path / "out"
    launch = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log")]
    proc = subprocess.Popen(launch + start_argv(save_dir, scenes_root, "--batch_size", 1)[1:], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_checkpoint(str(save_dir), proc, "iter_2")
        os.kill(rank_pid(save_dir, 1), signal.SIGTERM)
        out = proc.communicate(timeout=TIMEOUT)[0]
    finally:
        proc.kill()
    logs = [(tmp_path / "log" / f"workerlog.{rank}").read_text() for rank in (0, 1)]
    assert proc.returncode == 143, out[-3000:]
    stops = [re.findall(r"SIGTERM received: training stopped cleanly after iteration (\d+)", log) for log in logs]
    assert len(stops[0]) == 1 and stops[0] == stops[1], f"{stops}\n{logs[0][-2000:]}\n{logs[1][-2000:]}"
    assert all("Traceback" not in log for log in logs), logs
    checkpoints.load_checkpoint(checkpoints.iteration_folders(str(save_dir))[-1])
    assert processes_naming(save_dir) == [], "ranks outlived the run"
