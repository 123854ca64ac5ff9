"""The LiftQuant container (``*.lqt``): writer and validating reader of the IR (spec/container.md).

Physical layer: one safetensors file. Every tensor is named by its role; the header's metadata
holds the format name and version, the model config, the quantization layout (per transform and
per linear) and a SHA-256 per tensor. Writes are atomic (temp file + rename); the reader checks
everything and raises only FormatError.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from liftexport.errors import FormatError
from liftexport.ir import IR_VERSION, LiftedLinear, LiftTransform, QuantizedModel, RTNLinear, row_bytes

FORMAT_NAME = "liftquant-container"
FORMAT_VERSION = 1
MAX_HEADER = 100 * 1024 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8}
_DT_NAME = {v: k for k, v in _DT.items()}
LIFT_PARAM_DTYPE = torch.float16  # M, a, b, s1, scales, bias of lifted layers


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(_raw(t)).hexdigest()


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def _lp(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(LIFT_PARAM_DTYPE).contiguous().cpu()


def to_tensors(ir: QuantizedModel) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """IR -> (tensors, string metadata) exactly as the container stores them."""
    tensors: dict[str, torch.Tensor] = {}
    tfs, lins, kept = {}, {}, {}
    for key, tf in ir.transforms.items():
        _check_name(key)
        tfs[key] = {"D": tf.D, "d": tf.d, "in_features": tf.in_features, "n1": tf.n1, "n2": tf.n2, "mix": tf.mix,
                    "s1": tf.s1 is not None}
        tensors[f"tf.{key}.M"] = _lp(tf.M)
        tensors[f"tf.{key}.a"] = _lp(tf.a)
        tensors[f"tf.{key}.b"] = _lp(tf.b)
        if tf.s1 is not None:
            tensors[f"tf.{key}.s1"] = _lp(tf.s1)
    for name, lin in ir.linears.items():
        _check_name(name)
        if isinstance(lin, LiftedLinear):
            lins[name] = {"kind": "lift", "transform": lin.transform, "out_features": lin.out_features,
                          "bias": lin.bias is not None}
            tensors[f"lin.{name}.codes"] = lin.codes.to(torch.uint8).contiguous().cpu()
            tensors[f"lin.{name}.scales"] = _lp(lin.scales)
            if lin.bias is not None:
                tensors[f"lin.{name}.bias"] = _lp(lin.bias)
        elif isinstance(lin, RTNLinear):
            lins[name] = {"kind": "rtn", "bits": lin.bits, "group": lin.group, "in_features": lin.in_features,
                          "out_features": lin.out_features, "bias": lin.bias is not None}
            tensors[f"lin.{name}.q"] = lin.q.to(torch.uint8).contiguous().cpu()
            tensors[f"lin.{name}.scale"] = _lp(lin.scale)
            tensors[f"lin.{name}.zero"] = _lp(lin.zero)
            if lin.bias is not None:
                tensors[f"lin.{name}.bias"] = _lp(lin.bias)
        else:
            raise FormatError(f"{name}: unsupported linear type {type(lin).__name__}")
    for name, t in ir.kept.items():
        _check_name(name)
        if t.dtype not in _DT_NAME or t.dtype == torch.uint8:
            raise FormatError(f"kept tensor {name}: dtype {t.dtype} not storable")
        kept[name] = _DT_NAME[t.dtype]
        tensors[f"kept.{name}"] = t.detach().contiguous().cpu()
    for fname, data in ir.tokenizer.items():
        _check_name(fname)
        tensors[f"tokenizer.{fname}"] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else \
            torch.zeros(0, dtype=torch.uint8)
    quant = {"ir_version": IR_VERSION, "transforms": tfs, "linears": lins, "kept": kept,
             "tokenizer": sorted(ir.tokenizer)}
    meta = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "config": json.dumps(ir.config, sort_keys=True),
        "quant": json.dumps(quant, sort_keys=True),
        "meta": json.dumps(ir.meta, sort_keys=True, default=str),
        "sha256": json.dumps({k: _sha(v) for k, v in sorted(tensors.items())}, sort_keys=True),
    }
    return tensors, meta


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name) or ".." in name:
        raise FormatError(f"name {name!r} is not allowed in a container (letters, digits, _ . - only)")


def atomic_write(path: Path, write) -> Path:
    """Call write(tmp_path), then rename over ``path``; on any failure no file is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_container(ir: QuantizedModel, path: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    tensors, meta = to_tensors(ir)
    return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


# ----------------------------------------------------------------------------- reader


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise FormatError(msg)


def _int(v, what: str, lo: int = 0, hi: int = 1 << 40) -> int:
    _need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, f"{what}: expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _json(meta: dict, key: str, path) -> object:
    _need(key in meta, f"{path}: metadata key {key!r} missing")
    try:
        return json.loads(meta[key])
    except (ValueError, TypeError, RecursionError) as e:
        raise FormatError(f"{path}: metadata {key!r} is not valid JSON ({e})") from None


def read_header(path: Path) -> tuple[dict, dict]:
    """(tensor index, metadata) from the safetensors header, validated against the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            _need(len(head) == 8, f"{path}: truncated (no header length)")
            (n,) = struct.unpack("<Q", head)
            _need(0 < n <= min(MAX_HEADER, size - 8), f"{path}: header length {n} does not fit a {size}-byte file")
            raw = f.read(n)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"{path}: header is not valid JSON ({e})") from None
    _need(isinstance(header, dict), f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", None)
    _need(isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()),
          f"{path}: header has no string metadata (not a LiftQuant container)")
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        _need(isinstance(info, dict) and set(info) >= {"dtype", "shape", "data_offsets"}, f"{path}: tensor {name!r} entry malformed")
        _need(info["dtype"] in _DT, f"{path}: tensor {name!r} has dtype {info['dtype']!r} (allowed: {sorted(_DT)})")
        shape, offs = info["shape"], info["data_offsets"]
        _need(isinstance(shape, list) and len(shape) <= 4 and all(isinstance(s, int) and 0 <= s < 1 << 40 for s in shape),
              f"{path}: tensor {name!r} shape {shape!r} invalid")
        _need(isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
              and 0 <= offs[0] <= offs[1] <= data_len, f"{path}: tensor {name!r} offsets {offs!r} outside the data")
        nbytes = math.prod(shape) * torch.tensor([], dtype=_DT[info["dtype"]]).element_size()
        _need(offs[1] - offs[0] == nbytes, f"{path}: tensor {name!r} holds {offs[1] - offs[0]} bytes, shape needs {nbytes}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        _need(a1 <= b0, f"{path}: tensors {an!r} and {bn!r} overlap")
    return header, meta


def validate_layout(config, quant, path, kept_shapes: dict) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    """Check the config and quant layout; return {tensor name: (dtype, shape)} the layout implies.

    ``kept_shapes`` maps each kept tensor to its stored shape (None: not checked here).
    Shared by the container and GGUF readers.
    """
    _need(isinstance(config, dict) and isinstance(config.get("model_type"), str), f"{path}: config lacks model_type")
    _need(isinstance(quant, dict), f"{path}: quant layout is not an object")
    _need(quant.get("ir_version") == IR_VERSION, f"{path}: IR version {quant.get('ir_version')!r} unsupported")
    for k in ("transforms", "linears", "kept"):
        _need(isinstance(quant.get(k), dict), f"{path}: quant.{k} missing or not an object")
    expected: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    for key, t in quant["transforms"].items():
        _need(isinstance(t, dict), f"{path}: transform {key!r} malformed")
        w = f"{path}: transform {key!r}"
        D, d = _int(t.get("D"), w + " D", 2, 62), _int(t.get("d"), w + " d", 1, 61)
        _need(d < D and D - d <= 30, f"{w}: (D, d) = ({D}, {d}) invalid")
        IC = _int(t.get("in_features"), w + " in_features", 1, 1 << 20)
        n1, n2 = _int(t.get("n1"), w + " n1", 1, 1 << 20), _int(t.get("n2"), w + " n2", 1, 1 << 20)
        _need(n2 % d == 0, f"{w}: n2={n2} is not a multiple of d={d}")
        _need(IC <= n1 * n2 < IC + max(d, n2), f"{w}: n1*n2={n1 * n2} does not pad in_features={IC} minimally")
        _need(t.get("mix") == "dct2", f"{w}: mix {t.get('mix')!r} unsupported (expected 'dct2')")
        _need(isinstance(t.get("s1"), bool), f"{w}: s1 flag missing")
        expected[f"tf.{key}.M"] = ("F16", (d, D))
        expected[f"tf.{key}.a"] = ("F16", (n1,))
        expected[f"tf.{key}.b"] = ("F16", (n2 // d,))
        if t["s1"]:
            expected[f"tf.{key}.s1"] = ("F16", (n1 * n2,))
    for name, lin in quant["linears"].items():
        w = f"{path}: linear {name!r}"
        _need(isinstance(lin, dict), f"{w} malformed")
        OC = _int(lin.get("out_features"), w + " out_features", 1, 1 << 24)
        _need(isinstance(lin.get("bias"), bool), f"{w}: bias flag missing")
        if lin.get("kind") == "lift":
            tk = lin.get("transform")
            _need(isinstance(tk, str) and tk in quant["transforms"], f"{w}: transform {tk!r} not in the file")
            t = quant["transforms"][tk]
            expected[f"lin.{name}.codes"] = ("U8", (OC, row_bytes(t["n1"] * t["n2"] // t["d"] * t["D"])))
            expected[f"lin.{name}.scales"] = ("F16", (OC,))
        elif lin.get("kind") == "rtn":
            bits = _int(lin.get("bits"), w + " bits", 2, 8)
            group = _int(lin.get("group"), w + " group", 1, 1 << 20)
            IC = _int(lin.get("in_features"), w + " in_features", 1, 1 << 24)
            ng = -(-IC // group)
            expected[f"lin.{name}.q"] = ("U8", (OC, IC))
            expected[f"lin.{name}.scale"] = ("F16", (OC, ng))
            expected[f"lin.{name}.zero"] = ("F16", (OC, ng))
            _need(bits in (2, 3, 4, 8), f"{w}: bits {bits} unsupported")
        else:
            raise FormatError(f"{w}: kind {lin.get('kind')!r} unknown")
        if lin["bias"]:
            expected[f"lin.{name}.bias"] = ("F16", (OC,))
    for name, dt in quant["kept"].items():
        _need(dt in ("F32", "F16", "BF16"), f"{path}: kept tensor {name!r} dtype {dt!r} invalid")
        _need(name in kept_shapes, f"{path}: kept tensor {name!r} missing")
        expected[f"kept.{name}"] = (dt, kept_shapes[name])
    return expected


def ir_from_tensors(config, quant, meta, tensors, tokenizer, path) -> QuantizedModel:
    """Build the IR from validated tensors (names as in the container) and check their values."""
    for name, t in tensors.items():
        if t.is_floating_point():
            _need(bool(torch.isfinite(t).all()), f"{path}: tensor {name!r} holds non-finite values")
    ir = QuantizedModel(config=config, tokenizer=dict(tokenizer), meta=meta)
    for key, t in quant["transforms"].items():
        tf = LiftTransform(
            D=t["D"], d=t["d"], in_features=t["in_features"], n1=t["n1"], n2=t["n2"], M=tensors[f"tf.{key}.M"].float(),
            a=tensors[f"tf.{key}.a"].float(), b=tensors[f"tf.{key}.b"].float(),
            s1=tensors[f"tf.{key}.s1"].float() if t["s1"] else None)
        _need(bool((tf.a != 0).all() and (tf.b != 0).all()), f"{path}: transform {key!r} has a zero scale")
        _need(tf.s1 is None or bool((tf.s1 != 0).all()), f"{path}: transform {key!r} has a zero s1")
        ir.transforms[key] = tf
    for name, lin in quant["linears"].items():
        bias = tensors[f"lin.{name}.bias"].float() if lin["bias"] else None
        if lin["kind"] == "lift":
            ir.linears[name] = LiftedLinear(lin["transform"], lin["out_features"], tensors[f"lin.{name}.codes"],
                                            tensors[f"lin.{name}.scales"].float(), bias)
        else:
            q = tensors[f"lin.{name}.q"]
            _need(int(q.max()) < (1 << lin["bits"]) if q.numel() else True, f"{path}: {name!r} codes exceed {lin['bits']} bits")
            ir.linears[name] = RTNLinear(lin["bits"], lin["group"], lin["in_features"], lin["out_features"], q,
                                         tensors[f"lin.{name}.scale"].float(), tensors[f"lin.{name}.zero"].float(), bias)
    for name in quant["kept"]:
        ir.kept[name] = tensors[f"kept.{name}"]
    return ir


def read_container(path: str | os.PathLike, verify: bool = True) -> QuantizedModel:
    """Read and validate a container; any problem raises FormatError naming it."""
    path = Path(path)
    header, meta = read_header(path)
    _need(meta.get("format") == FORMAT_NAME, f"{path}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    ver = meta.get("version", "")
    _need(ver.isdigit(), f"{path}: version {ver!r} is not an integer")
    _need(int(ver) == FORMAT_VERSION, f"{path}: container version {ver}; this reader supports version {FORMAT_VERSION}")
    config = _json(meta, "config", path)
    quant = _json(meta, "quant", path)
    extra = _json(meta, "meta", path) if "meta" in meta else {}
    sums = _json(meta, "sha256", path)
    _need(isinstance(sums, dict), f"{path}: sha256 table is not an object")
    _need(isinstance(extra, dict), f"{path}: meta is not an object")
    _need(isinstance(quant, dict) and isinstance(quant.get("tokenizer"), list), f"{path}: quant.tokenizer missing")
    kept_shapes = {}
    for name in (quant.get("kept") or {}) if isinstance(quant.get("kept"), dict) else {}:
        if f"kept.{name}" in header:
            kept_shapes[name] = tuple(header[f"kept.{name}"]["shape"])
    expected = validate_layout(config, quant, path, kept_shapes)
    for fname in quant["tokenizer"]:
        _need(isinstance(fname, str) and _NAME_RE.match(fname) is not None and ".." not in fname,
              f"{path}: tokenizer file name {fname!r} not allowed")
        _need(f"tokenizer.{fname}" in header, f"{path}: tokenizer file {fname!r} missing")
        expected[f"tokenizer.{fname}"] = ("U8", tuple(header[f"tokenizer.{fname}"]["shape"]))
        _need(len(expected[f"tokenizer.{fname}"][1]) == 1, f"{path}: tokenizer file {fname!r} is not a byte vector")
    for name, (dt, shape) in expected.items():
        _need(name in header, f"{path}: tensor {name!r} missing")
        info = header[name]
        _need(info["dtype"] == dt, f"{path}: tensor {name!r} is {info['dtype']}, expected {dt}")
        _need(tuple(info["shape"]) == shape, f"{path}: tensor {name!r} has shape {tuple(info['shape'])}, expected {shape}")
    extra_t = set(header) - set(expected)
    _need(not extra_t, f"{path}: unexpected tensors {sorted(extra_t)[:5]}")
    _need(set(sums) == set(header), f"{path}: sha256 table does not cover exactly the tensors")
    tensors = _load(path, header)
    if verify:
        for name, t in tensors.items():
            _need(isinstance(sums[name], str) and _sha(t) == sums[name], f"{path}: tensor {name!r} fails its SHA-256 check (corrupt)")
    tok = {f: bytes(tensors.pop(f"tokenizer.{f}").numpy().tobytes()) for f in quant["tokenizer"]}
    return ir_from_tensors(config, quant, extra, tensors, tok, path)


def _load(path: Path, header: dict) -> dict[str, torch.Tensor]:
    """Tensors by name from the (already validated) header, read through a memory map."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(mm[:8]))
    base = 8 + n
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        buf = np.array(mm[base + a : base + b])  # copy: the tensor must outlive the map
        dt = _DT[info["dtype"]]
        if dt == torch.bfloat16:
            t = torch.from_numpy(buf.view(np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(buf.view(torch.tensor([], dtype=dt).numpy().dtype).copy())
        out[name] = t.reshape(info["shape"])
    del mm
    return out


def container_bytes(ir: QuantizedModel) -> int:
    """Exact size of the file write_container would produce (header included)."""
    from safetensors.torch import save

    tensors, meta = to_tensors(ir)
    return len(save(tensors, metadata=meta))
