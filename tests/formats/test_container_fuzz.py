"""Fuzzing the container reader: >= 10^4 mutated, truncated and hand-crafted hostile files per CI run.

Every file must end in FormatError (or load as a valid model): never another exception, a crash
or a hang. bench/fuzz_container.py runs the same generator for 10^5+ cases outside CI.
"""

import json
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftexport.errors import FormatError
from liftexport.formats.container import read_container

VEC = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "tiny_model.lqt"
BASE = VEC.read_bytes()
N = struct.unpack("<Q", BASE[:8])[0]
HEADER = json.loads(BASE[8 : 8 + N])


def _with_header(h: dict, data: bytes = BASE[8 + N :]) -> bytes:
    hb = json.dumps(h).encode()
    return struct.pack("<Q", len(hb)) + hb + data


@st.composite
def hostile(draw):
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "header"]))
    b = bytearray(BASE)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= draw(st.integers(1, 255))
        return bytes(b)
    if kind == "truncate":
        return bytes(b[: draw(st.integers(0, len(b) - 1))])
    if kind == "splice":
        i = draw(st.integers(0, len(b)))
        return bytes(b[:i]) + draw(st.binary(max_size=64)) + bytes(b[i:])
    h = json.loads(json.dumps(HEADER))
    names = [k for k in h if k != "__metadata__"]
    name = draw(st.sampled_from(names))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "meta", "drop", "quant"]))
    if field == "dtype":
        h[name]["dtype"] = draw(st.sampled_from(["F64", "I64", "U8", "F16", "BOOL", "x"]))
    elif field == "shape":
        h[name]["shape"] = draw(st.lists(st.integers(-2, 1 << 41), max_size=6))
    elif field == "data_offsets":
        h[name]["data_offsets"] = draw(st.lists(st.integers(-5, len(BASE) * 2), min_size=0, max_size=3))
    elif field == "drop":
        del h[name]
    elif field == "meta":
        key = draw(st.sampled_from(sorted(h["__metadata__"])))
        h["__metadata__"][key] = draw(st.text(max_size=40) | st.just("[" * 5000) | st.just("{}") | st.just("null"))
    else:
        q = json.loads(h["__metadata__"]["quant"])
        section = draw(st.sampled_from(["transforms", "linears"]))
        k = draw(st.sampled_from(sorted(q[section])))
        fld = draw(st.sampled_from(sorted(q[section][k])))
        q[section][k][fld] = draw(st.one_of(st.integers(-3, 1 << 33), st.text(max_size=5), st.none(), st.booleans()))
        h["__metadata__"]["quant"] = json.dumps(q)
    return _with_header(h)


@settings(max_examples=10_000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hostile())
def test_reader_only_raises_format_error(tmp_path_factory, data):
    p = tmp_path_factory.getbasetemp() / "fuzz.lqt"
    p.write_bytes(data)
    try:
        read_container(p)
    except FormatError:
        pass
