"""GGUF: round trip against the reference, readable by the unmodified PyPI gguf package, hostile files."""

import json
import shutil
import subprocess
from pathlib import Path

import gguf
import pytest
import torch

from liftexport.errors import FormatError
from liftexport.formats.container import read_container
from liftexport.formats.gguf import is_liftquant_gguf, read_gguf, write_gguf
from liftexport.runtime.reference import build_model

VEC = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "tiny_model.lqt"


@pytest.fixture(scope="module")
def ir():
    return read_container(VEC)


@pytest.fixture(scope="module")
def gfile(ir, tmp_path_factory):
    return write_gguf(ir, tmp_path_factory.mktemp("g") / "tiny.gguf")


def test_roundtrip_logits_identical(ir, gfile):
    back = read_gguf(gfile)
    ids = torch.tensor([[7, 3, 9, 1, 200, 45]])
    with torch.no_grad():
        a, b = build_model(ir)(input_ids=ids).logits, build_model(back)(input_ids=ids).logits
    assert torch.equal(a, b)
    assert back.tokenizer == ir.tokenizer and back.config == ir.config
    for k, lin in ir.linears.items():
        assert torch.equal(back.linears[k].codes, lin.codes)
    assert is_liftquant_gguf(gfile)


def test_pypi_gguf_reads_every_tensor_and_key(gfile, ir):
    r = gguf.GGUFReader(str(gfile))
    for name, field in r.fields.items():
        field.contents()  # every key decodes
    assert r.fields["general.architecture"].contents() == "liftquant"
    assert r.fields["tokenizer.ggml.model"].contents() in ("gpt2", "llama", "none")
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == 256
    total = 0
    for t in r.tensors:
        total += t.n_bytes
        assert t.data is not None and t.data.nbytes == t.n_bytes
    n_lin = len(ir.linears)
    assert sum(t.name.endswith(".lq_codes") for t in r.tensors) == n_lin
    assert total > 0


@pytest.mark.skipif(shutil.which("gguf-dump") is None and not Path(gguf.__file__).parent.joinpath("scripts").exists(),
                    reason="gguf-dump not installed")
def test_gguf_dump_opens_it(gfile):
    exe = shutil.which("gguf-dump") or str(Path(__import__("sys").executable).parent / "gguf-dump")
    r = subprocess.run([exe, "--json", str(gfile)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    info = json.loads(r.stdout)
    assert info["metadata"]["general.architecture"]["value"] == "liftquant"


def test_rejects_foreign_and_broken(tmp_path, gfile):
    from liftexport.models.load import example_model_path

    with pytest.raises(FormatError, match="architecture"):
        read_gguf(example_model_path())
    bad = tmp_path / "b.gguf"
    bad.write_bytes(gfile.read_bytes()[:100])
    with pytest.raises(FormatError):
        read_gguf(bad)
    with pytest.raises(FormatError, match="no such file"):
        read_gguf(tmp_path / "none.gguf")


def test_file_size_close_to_container(gfile):
    # tiny model: headers dominate; the 2% bar is checked on the example model in bench/RESULTS.md
    assert abs(gfile.stat().st_size / VEC.stat().st_size - 1) < 0.15
