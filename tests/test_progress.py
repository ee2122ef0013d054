"""Progress: a tqdm bar on a terminal, plain periodic lines in logs (segkit.progress.track)."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time

import pytest
from conftest import ROOT

from segkit import progress
from segkit.progress import track


def test_lines_every_tenth_and_a_summary(monkeypatch, capsys):
    monkeypatch.delenv("SEGKIT_PROGRESS", raising=False)  # pytest's captured stderr is no terminal
    assert list(track(range(20), desc="[EVAL]", unit="img")) == list(range(20))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10  # at 10 %, 20 %, ... 90 %, then the summary
    assert "[INFO]\t[EVAL] 2/20 img (10%), " in lines[0] and " img/s, ETA 00:00:" in lines[0]
    assert "[EVAL] 18/20 img (90%)" in lines[8]
    assert "[EVAL] 20/20 img in 00:00:00 (" in lines[9]


def test_lines_at_least_every_interval_without_a_total(monkeypatch, capsys):
    monkeypatch.delenv("SEGKIT_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    list(track(iter(range(3)), desc="converting", unit="label"))
    lines = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert [line.split(",")[0] for line in lines[:3]] == ["converting 1 label", "converting 2 label", "converting 3 label"]
    assert len(lines) == 4 and lines[3].startswith("converting 3 label in 00:00:00 (")


def test_off_and_disabled_print_nothing(monkeypatch, capsys):
    monkeypatch.setenv("SEGKIT_PROGRESS", "off")
    assert sum(track(range(5))) == 10
    monkeypatch.setenv("SEGKIT_PROGRESS", "lines")
    assert sum(track(range(5), enabled=False)) == 10
    assert capsys.readouterr().out == ""


@pytest.mark.timeout(120)
def test_a_terminal_gets_a_tqdm_bar(tmp_path):
    """stderr on a real pseudo-terminal: tqdm redraws one line; stdout (a pipe) gets only the summary."""
    script = ("import time\nfrom segkit.progress import track\n"
              "for _ in track(range(30), desc='[EVAL]', unit='img'):\n    time.sleep(0.02)\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    env = {k: v for k, v in os.environ.items() if k != "SEGKIT_PROGRESS"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    terminal = b""
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        terminal += chunk
    out = proc.communicate(timeout=30)[0].decode()
    os.close(master)
    terminal = terminal.decode(errors="replace")
    assert proc.returncode == 0
    assert "\r" in terminal and "[EVAL]" in terminal and "/30 [" in terminal and "img/s" in terminal  # tqdm's bar
    assert "(10%)" not in out and "[EVAL] 30/30 img in" in out
