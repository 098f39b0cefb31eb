"""`squeezelab lab`: copies the explorer notebook (never over a user's copy) and runs JupyterLab on it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from squeezelab import _cmd_lab
from squeezelab.cli import main

EXPLORE = Path(__file__).resolve().parents[2] / "notebooks" / "explore.ipynb"


def _command(printed: str) -> list[str]:
    lines = [line for line in printed.splitlines() if line.startswith("$ ")]
    assert len(lines) == 1, printed
    return shlex.split(lines[0][2:])


def test_lab_copies_the_notebook_and_prints_the_jupyterlab_command(tmp_path, capsys):
    folder = tmp_path / "work" / "nb"
    assert main(["lab", "--dir", str(folder), "--no-browser", "--port", "8899", "--print-command"]) == 0
    target = folder / "explore.ipynb"
    assert target.read_bytes() == EXPLORE.read_bytes()
    command = _command(capsys.readouterr().out)
    assert command == [sys.executable, "-m", "jupyterlab", str(target), "--no-browser", "--port=8899"]


def test_lab_never_overwrites_an_existing_notebook(tmp_path, capsys):
    folder = tmp_path / "nb"
    folder.mkdir()
    mine = folder / "explore.ipynb"
    mine.write_text("my edited notebook")
    assert main(["lab", "--dir", str(folder), "--print-command"]) == 0
    assert mine.read_text() == "my edited notebook"
    out = capsys.readouterr().out
    assert "not overwritten" in out
    assert _command(out) == [sys.executable, "-m", "jupyterlab", str(mine)]


def test_lab_passes_other_options_to_jupyterlab(tmp_path, capsys):
    assert main(["lab", "--dir", str(tmp_path), "--print-command", "--allow-root", "--ServerApp.token=abc"]) == 0
    assert _command(capsys.readouterr().out)[4:] == ["--allow-root", "--ServerApp.token=abc"]


def test_other_commands_still_refuse_unknown_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--allow-root"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --allow-root" in capsys.readouterr().err


def test_lab_default_folder_is_relative_to_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["lab", "--print-command"]) == 0
    assert (tmp_path / "squeezelab-notebooks" / "explore.ipynb").is_file()
    assert _command(capsys.readouterr().out)[3] == str(Path("squeezelab-notebooks") / "explore.ipynb")


def test_lab_says_where_it_looked_when_the_notebooks_are_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_cmd_lab, "notebooks_dir", lambda: tmp_path / "nowhere")
    assert main(["lab", "--dir", str(tmp_path / "nb"), "--print-command"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere" / "explore.ipynb") in err and "pip install -e" in err
    assert not (tmp_path / "nb").exists()


def test_lab_command_line_entry_point(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "squeezelab", "lab", "--dir", str(tmp_path), "--print-command"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _command(done.stdout)[1:3] == ["-m", "jupyterlab"]
    assert (tmp_path / "explore.ipynb").is_file()
