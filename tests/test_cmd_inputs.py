"""DATA files for the CLI: a file named .npz that is not an npz archive is named for what it is, in one line
with exit status 2, before anything is loaded or compressed (never numpy's "pickled data" message)."""

from __future__ import annotations

import numpy as np
import pytest

import squeezelab as sl
from squeezelab._cmd_inputs import load_data
from squeezelab.cli import main


@pytest.mark.parametrize(
    ("write", "looks"),
    [
        (lambda p: p.write_text("x0,x1,label\n0.1,0.2,3\n"), "it is text (it starts 'x0,x1,label"),
        (lambda p: np.save(open(p, "wb"), np.zeros((3, 4))), "it is a single .npy array"),
        (lambda p: p.write_bytes(b"\x00\x01\x02binary"), "it is not a zip archive"),
        (lambda p: p.write_bytes(b""), "it is empty"),
    ],
    ids=["csv", "npy", "binary", "empty"],
)
def test_a_file_that_is_not_an_npz_archive_is_named_for_what_it_is(tmp_path, write, looks):
    path = tmp_path / "test.npz"
    write(path)
    with pytest.raises(sl.errors.DataError) as info:
        load_data(path)
    message = str(info.value)
    assert f"--data {str(path)!r} is not an .npz archive" in message and looks in message
    assert "numpy.savez" in message and "pickle" not in message


def test_a_real_npz_still_loads(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.ones((3, 2), np.float32), targets=np.arange(3))
    inputs, targets = load_data(tmp_path / "ok.npz")
    assert inputs.shape == (3, 2) and targets.tolist() == [0, 1, 2]


def test_the_cli_says_it_in_one_line_with_exit_2_before_any_work(tmp_path, capsys, monkeypatch, digits_mlp):
    model, split = digits_mlp
    onnx = sl.compress(model, example_inputs=split.x_test[:1]).save(tmp_path / "mlp.onnx")
    (tmp_path / "test.npz").write_text("x,label\n0.5,1\n")
    monkeypatch.setattr(sl, "compress", lambda *a, **k: pytest.fail("work started despite unreadable data"))
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(onnx), "--recipe", "int8-dynamic", "--output", str(tmp_path / "out.onnx"),
              "--data", str(tmp_path / "test.npz")])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is not an .npz archive: it is text" in lines[0] and "Traceback" not in lines[0]
