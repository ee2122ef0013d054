"""Weights files are data, never code: pickle payloads are refused on every reading path, PyTorch
tensor records cannot read outside their storage, archives cannot write outside their folder, and a
download that fails or stalls leaves nothing in the cache."""

import io
import os
import pickle
import socket
import tarfile
import threading
import zipfile

import numpy as np
import paddle
import pytest
from cli import TIMEOUT, make_case, run_side_by_side, tool
from torch_files import FakeStorage, FakeTensor, TorchName, write_fake_torch_checkpoint

from segkit.errors import CheckpointError
from segkit.weights import read_state_dict, sources
from segkit.weights.safe_pickle import load_paddle_file
from segkit.weights.torch_pickle import read_torch_zip


class Payload:
    """Unpickling this calls ``callable_(*args)``: what a malicious weights file does."""

    def __init__(self, callable_, *args):
        self.callable_, self.args = callable_, args

    def __reduce__(self):
        return self.callable_, self.args


def creates(marker):
    """A payload that creates the file ``marker`` when it runs."""
    return Payload(open, str(marker), "w")


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return str(path)


def test_paddle_files_read_as_paddle_load_reads_them(tmp_path):
    layer = paddle.nn.Linear(3, 2)
    optimizer = paddle.optimizer.AdamW(parameters=layer.parameters())
    layer(paddle.ones([1, 3])).sum().backward()
    optimizer.step()
    state = {"iter": 7, "lr_scheduler": {"last_epoch": 7, "last_lr": 0.5}, "best": (0.25, None), "name": "x"}
    for name, obj in (("m.pdparams", layer.state_dict()), ("m.pdopt", optimizer.state_dict()), ("s.pdstates", state)):
        path = str(tmp_path / name)
        paddle.save(obj, path)
        expected = paddle.load(path, return_numpy=True)
        got = load_paddle_file(path)
        assert got.keys() == expected.keys(), name
        for key in expected:
            np.testing.assert_equal(got[key], expected[key], err_msg=f"{name} {key}")


@pytest.mark.parametrize("payload", [
    lambda m: creates(m),
    lambda m: Payload(os.system, f"touch {m}"),
    lambda m: Payload(eval, f"open({str(m)!r}, 'w')"),
    lambda m: {"weight": np.zeros(2, np.float32), "meta": [creates(m)]},  # hidden among real arrays
])
def test_a_payload_in_a_paddle_file_never_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "model.pdparams", payload(marker))
    with pytest.raises(CheckpointError, match="refused to load") as info:
        read_state_dict(path)
    assert path in str(info.value) and "Nothing from the file was run" in str(info.value)
    assert not marker.exists()


def test_a_truncated_paddle_file_is_a_clear_error(tmp_path):
    path = str(tmp_path / "model.pdparams")
    paddle.save({"w": paddle.ones([64])}, path)
    with open(path, "r+b") as f:
        f.truncate(40)
    with pytest.raises(CheckpointError, match="truncated"):
        load_paddle_file(path)


@pytest.mark.timeout(2 * TIMEOUT)
def test_no_tool_runs_a_payload(tmp_path):
    """--model_path, pretrained, --resume_model and convert_weights.py, each with a payload file."""
    config, _ = make_case(tmp_path, "data", "train", None)
    from segkit.config import load_config

    model = load_config(config).build_model()
    marker = tmp_path / "pwned"
    bad = write_pickle(tmp_path / "bad.pdparams", creates(marker))
    resume = tmp_path / "run" / "iter_2"  # a checkpoint folder whose optimizer state is the payload
    resume.mkdir(parents=True)
    paddle.save(model.state_dict(), str(resume / "model.pdparams"))
    write_pickle(resume / "model.pdopt", {"moment": creates(marker)})
    paddle.save({"iter": 2}, str(resume / "train_state.pdstates"))
    torch_bad = str(tmp_path / "bad.pth")
    write_fake_torch_checkpoint(torch_bad, {"state_dict": {}, "x": Payload(TorchName("posix", "system"), "true")}, [])
    commands = {
        "val.py --model_path": (tool("val.py", "--config", config, "--model_path", bad), bad),
        "pretrained": (tool("train.py", "--config", config, "--save_dir", tmp_path / "fresh",
                            "--opts", f"model.pretrained={bad}"), bad),
        "train.py --resume_model": (tool("train.py", "--config", config, "--save_dir", tmp_path / "run",
                                         "--resume_model", resume), str(resume / "model.pdopt")),
        "convert_weights.py .pth": (tool("convert_weights.py", torch_bad, tmp_path / "out.pdparams",
                                         "--model", "segformer_b0", "--num_classes", 19), torch_bad),
    }
    results = run_side_by_side({name: argv for name, (argv, _) in commands.items()})
    for name, (code, out) in results.items():
        assert code == 2 and commands[name][1] in out and "refused to load" in out, f"{name}: exit {code}\n{out[-3000:]}"
        assert "Traceback" not in out, f"{name}:\n{out[-3000:]}"
    assert "posix.system" in results["convert_weights.py .pth"][1]
    assert not marker.exists()


# ---- PyTorch zips: records come from the file too --------------------------------------------
def torch_file(tmp_path, tensor, storages, meta=None):
    path = str(tmp_path / "w.pth")
    write_fake_torch_checkpoint(path, {"state_dict": {"w": tensor}, "meta": meta}, storages)
    return path


def test_torch_metadata_classes_load_and_code_is_refused(tmp_path):
    storage = FakeStorage(TorchName("torch", "FloatStorage"), "0", np.arange(6, dtype=np.float32))
    meta = {"args": TorchName("argparse", "Namespace"), "config": TorchName("mmengine.config", "ConfigDict")}
    path = torch_file(tmp_path, FakeTensor(storage, 0, (2, 3), (3, 1)), [storage], meta)
    np.testing.assert_array_equal(read_torch_zip(path)["w"], np.arange(6).reshape(2, 3))
    marker = tmp_path / "pwned"
    for name in (("builtins", "eval"), ("subprocess", "Popen"), ("os", "system")):
        evil = Payload(TorchName(*name), f"open({str(marker)!r}, 'w')")
        path = torch_file(tmp_path, FakeTensor(storage, 0, (2, 3), (3, 1)), [storage], evil)
        with pytest.raises(CheckpointError, match=f"refused to load.*{'.'.join(name)}"):
            read_torch_zip(path)
    assert not marker.exists()


@pytest.mark.parametrize("offset, size, stride, problem", [
    (0, (4, 4), (4, 1), "reaches element 15 of a storage of 6"),  # sizes past the end
    (5, (2,), (1,), "reaches element 6"),  # offset + size past the end
    (0, (3, 2), (1, 1000000), "reaches element"),  # a stride far outside
    (0, (2,), (-1,), "stride"),  # a negative stride
    (7, (), (), "reaches element 7"),  # a 0-d tensor past the end
])
def test_torch_records_pointing_outside_their_storage_are_refused(tmp_path, offset, size, stride, problem):
    storage = FakeStorage(TorchName("torch", "FloatStorage"), "0", np.arange(6, dtype=np.float32))
    path = torch_file(tmp_path, FakeTensor(storage, offset, size, stride), [storage])
    with pytest.raises(CheckpointError, match=problem) as info:
        read_torch_zip(path)
    assert path in str(info.value)


def test_torch_records_naming_a_missing_storage_or_an_unknown_dtype_are_refused(tmp_path):
    storage = FakeStorage(TorchName("torch", "FloatStorage"), "0", np.arange(6, dtype=np.float32))
    path = torch_file(tmp_path, FakeTensor(storage, 0, (6,), (1,)), [])  # the record, not the bytes
    with pytest.raises(CheckpointError, match="storage record .*data/0"):
        read_torch_zip(path)
    objects = FakeStorage("object", "0", np.arange(6, dtype=np.int64))  # raw bytes read as pointers would crash
    path = torch_file(tmp_path, FakeTensor(objects, 0, (6,), (1,)), [objects])
    with pytest.raises(CheckpointError, match="unsupported PyTorch storage record"):
        read_torch_zip(path)


# ---- archives and downloads -------------------------------------------------------------------
def weights_bytes():
    buffer = io.BytesIO()
    paddle.save({"w": paddle.ones([2])}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("member", ["../../escaped.pdparams", "/tmp/segkit_absolute.pdparams"])
def test_archive_members_cannot_leave_their_folder(tmp_path, member):
    for suffix in (".zip", ".tar.gz"):
        path = str(tmp_path / "sub" / f"w{suffix}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = weights_bytes()
        if suffix == ".zip":
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr(member, data)
        else:
            with tarfile.open(path, "w:gz") as archive:
                info = tarfile.TarInfo(member)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        with pytest.raises(CheckpointError, match="outside the extraction folder"):
            read_state_dict(path)
    assert not (tmp_path / "escaped.pdparams").exists() and not os.path.exists("/tmp/segkit_absolute.pdparams")


def test_a_symlink_in_an_archive_is_refused(tmp_path):
    path = str(tmp_path / "w.tar.gz")
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("model.pdparams")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(CheckpointError, match="link"):
        read_state_dict(path)


def serve_once(handler):
    """A one-connection TCP server on localhost running ``handler(connection)``; returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run():
        connection, _ = server.accept()
        with connection:
            handler(connection)
        server.close()

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def test_a_silent_server_times_out_and_a_cut_download_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SEGKIT_DOWNLOAD_TIMEOUT", "1")
    release = threading.Event()
    port = serve_once(lambda connection: release.wait(10))  # accepts, never answers
    try:
        with pytest.raises(CheckpointError, match="did not answer within 1 s"):
            read_state_dict(f"http://127.0.0.1:{port}/model.pdparams")
    finally:
        release.set()
    data = weights_bytes()

    def cut(connection):
        connection.recv(4096)
        header = f"HTTP/1.0 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        connection.sendall(header + data[: len(data) // 2])  # then the connection drops

    port = serve_once(cut)
    with pytest.raises(CheckpointError, match=f"could not download .*{len(data) // 2} of {len(data)} bytes"):
        read_state_dict(f"http://127.0.0.1:{port}/model.pdparams")
    assert os.listdir(tmp_path / "cache") == []
