"""The public translation API (ondevice.Translator) and `ondevice translate`, on the tiny trained model."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

torch = pytest.importorskip("torch")

from ondevice.errors import ConfigError, DataError  # noqa: E402
from ondevice.translator import MAX_INPUT_CHARS, Translator  # noqa: E402

SENTENCES = ["the dog sees a cat", "a small red house", "the man and the woman sleep", "the green tree is big"]


@pytest.fixture(scope="module")
def tr(tiny_trained_run):
    run, _ = tiny_trained_run
    return Translator(run, threads=1, backend="torch", beam_size=2)


def test_translates_and_keeps_empty_lines(tr):
    out = tr.translate_batch(["the dog sees a cat", "", "   ", "a small red house"])
    assert len(out) == 4 and out[1] == out[2] == ""
    assert "hund" in out[0] and "haus" in out[3], out
    assert tr.translate("the dog sees a cat") == out[0]
    assert tr.translate_batch([]) == []
    assert tr.translate_batch(["the dog sees a cat"], beam_size=1)[0]  # greedy works too


def test_bad_arguments_are_typed_errors(tr, tiny_trained_run, tmp_path):
    with pytest.raises(ConfigError, match="not one string"):
        tr.translate_batch("the dog")
    with pytest.raises(ConfigError, match="not str"):
        tr.translate_batch([b"bytes"])
    with pytest.raises(DataError, match="limit"):
        tr.translate_batch(["a " * MAX_INPUT_CHARS])
    with pytest.raises(DataError, match="tokens long"):
        tr.translate_batch(["the dog " * 800])
    with pytest.raises(ConfigError, match="beam_size"):
        tr.translate_batch(["the dog"], beam_size=0)
    with pytest.raises(ConfigError, match="backend"):
        Translator(tiny_trained_run[0], backend="tensorflow")
    with pytest.raises(DataError, match="does not exist"):
        Translator(tmp_path / "nowhere")


def test_file_translation_and_invalid_utf8(tr, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes("\ufeffthe dog sees a cat\n\na small red house\n".encode("utf-8"))
    n = tr.translate_file(src, tmp_path / "out.txt", progress=False)
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert n == 3 and out[1] == "" and out[3] == "" and len(out) == 4
    src.write_bytes(b"the dog\nthe \xff cat\n")
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        tr.translate_file(src, tmp_path / "out2.txt", progress=False)
    assert not (tmp_path / "out2.txt").exists()


def test_files_are_streamed_and_errors_name_the_input_line(tr, tiny_trained_run, tmp_path, monkeypatch):
    """Files and stdin are translated a batch at a time (memory stays bounded): the result equals
    one big batch; a sentence the model cannot take is reported by its line in the file, not by
    its index in a batch, and the previous output file is left as it was; with -i and no -o,
    every line is checked before the first is translated."""
    from ondevice.cli import main

    lines = [SENTENCES[k % 4] if k % 5 else "" for k in range(70)]
    src, target = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(s + "\n" for s in lines))
    expected = tr.translate_batch(lines)
    assert tr.translate_file(src, target, batch_lines=16, progress=False) == 70
    assert target.read_text().split("\n")[:-1] == expected
    with src.open("rb") as f:
        assert list(tr.translate_stream(f, "in.txt", batch_lines=64)) == expected
    r = _cli("--model", str(tiny_trained_run[0]), "--beam", "2", "--threads", "1", "-i", str(src))
    assert r.returncode == 0 and r.stdout.decode().split("\n")[:-1] == expected, r.stderr
    fifo = tmp_path / "fifo"  # a pipe (-i <(command), /dev/stdin) can be read only once: no checking pass
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(src.read_bytes()))
    writer.start()
    assert tr.translate_file(fifo, tmp_path / "from_pipe.txt", progress=False) == 70
    writer.join()
    assert (tmp_path / "from_pipe.txt").read_text().split("\n")[:-1] == expected
    (tmp_path / "from_pipe.txt").unlink()
    fifo.unlink()

    src.write_text("".join(s + "\n" for s in lines[:66] + ["the dog " * 800] + lines[67:]))
    with pytest.raises(DataError, match=r"in.txt: line 67 is \d+ tokens long"):
        tr.translate_file(src, target, progress=False)
    assert target.read_text().split("\n")[:-1] == expected and sorted(p.name for p in tmp_path.iterdir()) == \
        ["in.txt", "out.txt"]
    r = _cli("--model", str(tiny_trained_run[0]), stdin=src.read_bytes())
    assert r.returncode == 1 and b"stdin: line 67 is" in r.stderr and r.stdout.count(b"\n") == 64, r.stderr

    src.write_bytes(src.read_bytes() + b"\xff\n")
    with monkeypatch.context() as m:
        m.setattr(Translator, "translate_batch", lambda *_, **__: pytest.fail("translated before checking"))
        assert main(["translate", "--model", str(tiny_trained_run[0]), "--backend", "torch", "-i", str(src)]) == 1
        with pytest.raises(DataError, match="in.txt: line 71 is not valid UTF-8"):
            tr.translate_file(src, target, progress=False)


def test_one_translator_shared_by_threads_equals_sequential(tr):
    expected = [tr.translate_batch([s]) for s in SENTENCES]
    results: dict[int, list[str]] = {}

    def work(k: int) -> None:
        results[k] = tr.translate_batch([SENTENCES[k % len(SENTENCES)]])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected[k % len(SENTENCES)] for k in range(8))


def _cli(*args: str, stdin: bytes | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ondevice", "translate", "--backend", "torch", *args], input=stdin,
                          capture_output=True,
                          cwd=cwd, timeout=300)


def test_cli_arguments_stdin_and_files(tr, tiny_trained_run, tmp_path):
    run = str(tiny_trained_run[0])
    r = _cli("--model", run, "--beam", "2", "--threads", "1", "the dog sees a cat", "a small red house")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().splitlines() == tr.translate_batch(["the dog sees a cat", "a small red house"])
    r = _cli("--model", run, "--beam", "2", "--threads", "1", stdin=b"the dog sees a cat\n\n")
    assert r.returncode == 0 and r.stdout.decode().splitlines() == [tr.translate("the dog sees a cat"), ""]
    (tmp_path / "in.txt").write_text("a small red house\n")
    r = _cli("--model", run, "--beam", "2", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.txt"), "--quiet")
    assert r.returncode == 0 and (tmp_path / "o.txt").read_text().splitlines() == [tr.translate("a small red house")]
    r = _cli("--model", run, stdin=b"\xff\xfe bad\n")
    assert r.returncode == 1 and b"not valid UTF-8" in r.stderr and b"Traceback" not in r.stderr
    r = _cli("--model", str(tmp_path / "missing"), "hello")
    assert r.returncode == 1 and b"does not exist" in r.stderr and b"Traceback" not in r.stderr


def test_unusable_input_and_output_paths_are_refused_before_translating(tr, tiny_trained_run, tmp_path,
                                                                        monkeypatch):
    """An output that cannot be written is refused before any sentence is translated (the work would
    otherwise be lost at the end with an error about a temporary file); an input path the OS refuses
    is a DataError naming it; a thread count far beyond any device is a ConfigError, not a binding
    TypeError."""
    from ondevice.cli import main

    src = tmp_path / "in.txt"
    src.write_text("the dog sees a cat\n")
    (tmp_path / "adir").mkdir()

    def no_translating(*_, **__):
        raise AssertionError("translated before the output path was checked")

    targets = ((tmp_path / "nodir" / "o.txt", "its directory .*nodir does not exist"),
               (tmp_path / "adir", "is a directory"),
               (src / "o.txt", "in.txt is not a directory"))
    with monkeypatch.context() as m:
        m.setattr(Translator, "translate_batch", no_translating)
        for target, msg in targets:
            with pytest.raises(DataError, match=msg):
                tr.translate_file(src, target, progress=False)
            assert main(["translate", "--model", str(tiny_trained_run[0]), "--backend", "torch", "-i", str(src),
                         "-o", str(target), "--quiet"]) == 1
    for target, _ in targets:
        r = _cli("--model", str(tiny_trained_run[0]), "-i", str(src), "-o", str(target), "--quiet")
        assert r.returncode == 1 and b"Traceback" not in r.stderr and b".tmp" not in r.stderr, r.stderr
    with pytest.raises(DataError, match="cannot read input file .*in.txt/x: Not a directory"):
        tr.translate_file(src / "x", tmp_path / "o.txt", progress=False)
    assert not (tmp_path / "o.txt").exists()
    for threads in (1025, 10 ** 11):
        with pytest.raises(ConfigError, match=r"threads must be an integer in 0\.\.1024"):
            Translator(tiny_trained_run[0], threads=threads)
    assert main(["translate", "--threads", str(10 ** 11), "hello"]) == 1
