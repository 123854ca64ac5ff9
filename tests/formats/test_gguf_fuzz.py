"""Fuzzing the GGUF reader: >= 10^4 hostile files per CI run end in FormatError, never anything else."""

import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftexport.errors import FormatError
from liftexport.formats.container import read_container
from liftexport.formats.gguf import read_gguf, write_gguf

_BASE = None


def base() -> bytes:
    global _BASE
    if _BASE is None:
        import tempfile

        vec = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "tiny_model.lqt"
        p = Path(tempfile.mkdtemp()) / "b.gguf"
        write_gguf(read_container(vec), p)
        _BASE = p.read_bytes()
    return _BASE


@st.composite
def hostile(draw):
    b = bytearray(base())
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "count", "header_flip"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        b = b[: draw(st.integers(0, len(b) - 1))]
    elif kind == "splice":
        i = draw(st.integers(0, len(b)))
        b = b[:i] + draw(st.binary(max_size=64)) + b[i:]
    elif kind == "count":
        off = draw(st.sampled_from([8, 16]))
        struct.pack_into("<Q", b, off, draw(st.integers(0, (1 << 64) - 1)))
    else:  # flip bytes inside the first 4 KiB (key/value headers, lengths, types)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, min(4096, len(b)) - 1))
            b[i] = draw(st.integers(0, 255))
    return bytes(b)


@settings(max_examples=10_000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hostile())
def test_gguf_reader_only_raises_format_error(tmp_path_factory, data):
    p = tmp_path_factory.getbasetemp() / "fuzz.gguf"
    p.write_bytes(data)
    try:
        read_gguf(p)
    except FormatError:
        pass
