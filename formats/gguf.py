"""GGUF export and import of the IR (spec/gguf.md), written and read with the PyPI ``gguf`` package.

Layout (a) of ecosystem-notes: ``general.architecture = "liftquant"``; kept tensors in their own
type (F32/F16/BF16) under their transformers names; lifted layers as raw bytes in I8 tensors plus
F16 tensors, described by ``liftquant.*`` keys; the full tokenizer both as ``tokenizer.ggml.*``
(for GGUF tools) and as the original files (``liftquant.tokenizer.*``, for exact round trips).
Any GGUF reader opens the file; only a LiftQuant-aware runtime computes it.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from liftexport.errors import FormatError
from liftexport.ir import IR_VERSION, LiftedLinear, QuantizedModel

ARCH = "liftquant"
FORMAT_VERSION = 1
MAX_NAME = 63
_SUFFIX = {"codes": "lq_codes", "scales": "lq_scales", "bias": "lq_bias"}
_TF = ("M", "a", "b", "s1")


def _gname(name: str) -> str:
    if len(name.encode()) > MAX_NAME:
        raise FormatError(f"GGUF tensor name {name!r} is longer than {MAX_NAME} bytes")
    return name


def _tokenizer_keys(w, ir: QuantizedModel) -> None:
    """tokenizer.ggml.* from tokenizer.json (BPE models); other tokenizer kinds get model 'none'."""
    import gguf

    tj = ir.tokenizer.get("tokenizer.json")
    cfg = json.loads(ir.tokenizer.get("tokenizer_config.json", b"{}") or b"{}")
    if tj is None:
        w.add_tokenizer_model("none")
        return
    t = json.loads(tj)
    model = t.get("model", {})
    if model.get("type") != "BPE":
        w.add_tokenizer_model("none")
        return
    vocab = model["vocab"]
    added = {a["id"]: a for a in t.get("added_tokens", [])}
    size = max(max(vocab.values(), default=-1), max(added, default=-1)) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for tok, i in vocab.items():
        tokens[i], types[i] = tok, gguf.TokenType.NORMAL
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("llama" if model.get("byte_fallback") else "gpt2")
    w.add_token_list(tokens)
    w.add_token_types([int(x) for x in types])
    if merges:
        w.add_token_merges(merges)
    by_content = {v: k for k, v in zip(range(size), tokens)}
    for key, add in (("bos_token", w.add_bos_token_id), ("eos_token", w.add_eos_token_id),
                     ("pad_token", w.add_pad_token_id), ("unk_token", w.add_unk_token_id)):
        v = cfg.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        if isinstance(v, str) and v in by_content:
            add(by_content[v])
    if isinstance(cfg.get("chat_template"), str):
        w.add_chat_template(cfg["chat_template"])
    elif "chat_template.jinja" in ir.tokenizer:
        w.add_chat_template(ir.tokenizer["chat_template.jinja"].decode("utf-8"))


def _arch_keys(w, c: dict) -> None:
    def put(key, val, fn):
        if val is not None:
            fn(f"{ARCH}.{key}", val)

    put("context_length", c.get("max_position_embeddings"), w.add_uint32)
    put("embedding_length", c.get("hidden_size"), w.add_uint32)
    put("block_count", c.get("num_hidden_layers"), w.add_uint32)
    put("feed_forward_length", c.get("intermediate_size"), w.add_uint32)
    put("attention.head_count", c.get("num_attention_heads"), w.add_uint32)
    put("attention.head_count_kv", c.get("num_key_value_heads") or c.get("num_attention_heads"), w.add_uint32)
    eps = c.get("rms_norm_eps")
    put("attention.layer_norm_rms_epsilon", None if eps is None else float(eps), w.add_float32)
    rp = c.get("rope_parameters") or {}
    theta = c.get("rope_theta", rp.get("rope_theta") if isinstance(rp, dict) else None)
    put("rope.freq_base", None if theta is None else float(theta), w.add_float32)


def write_gguf(ir: QuantizedModel, path: str | os.PathLike) -> Path:
    """Write the IR as one GGUF file (atomic: temp file + rename)."""
    import gguf

    path = Path(path)
    quant = {"ir_version": IR_VERSION, "transforms": {}, "linears": {}, "kept": {}}
    tensors: list[tuple[str, np.ndarray, object]] = []
    for key, tf in ir.transforms.items():
        quant["transforms"][key] = {"D": tf.D, "d": tf.d, "in_features": tf.in_features, "n1": tf.n1, "n2": tf.n2,
                                    "mix": tf.mix, "s1": tf.s1 is not None}
        for part in _TF:
            t = getattr(tf, part)
            if t is not None:
                tensors.append((_gname(f"{key}.lq_{part}"), t.to(torch.float16).numpy(), None))
    for name, lin in ir.linears.items():
        if not isinstance(lin, LiftedLinear):
            raise FormatError(f"GGUF export: {name} is not a lifted linear (RTN baselines are not exported)")
        quant["linears"][name] = {"kind": "lift", "transform": lin.transform, "out_features": lin.out_features,
                                  "bias": lin.bias is not None}
        tensors.append((_gname(f"{name}.lq_codes"), lin.codes.numpy().view(np.int8), gguf.GGMLQuantizationType.I8))
        tensors.append((_gname(f"{name}.lq_scales"), lin.scales.to(torch.float16).numpy(), None))
        if lin.bias is not None:
            tensors.append((_gname(f"{name}.lq_bias"), lin.bias.to(torch.float16).numpy(), None))
    for name, t in ir.kept.items():
        quant["kept"][name] = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[t.dtype]
        if t.dtype == torch.bfloat16:
            tensors.append((_gname(name), t.view(torch.int16).numpy().view(np.uint8).reshape(*t.shape[:-1], -1),
                            gguf.GGMLQuantizationType.BF16))
        else:
            tensors.append((_gname(name), t.numpy(), None))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, ARCH)
        w.add_name(str(ir.meta.get("source", "liftquant model")).rsplit("/", 1)[-1])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_uint32(f"{ARCH}.format_version", FORMAT_VERSION)
        w.add_string(f"{ARCH}.hf_config", json.dumps(ir.config, sort_keys=True))
        w.add_string(f"{ARCH}.quant", json.dumps(quant, sort_keys=True))
        w.add_string(f"{ARCH}.meta", json.dumps(ir.meta, sort_keys=True, default=str))
        w.add_array(f"{ARCH}.tokenizer_files", sorted(ir.tokenizer))
        for fname, data in sorted(ir.tokenizer.items()):
            try:
                w.add_string(f"{ARCH}.tokenizer.{fname}", data.decode("utf-8"))
            except UnicodeDecodeError:
                raise FormatError(f"tokenizer file {fname} is not UTF-8 text") from None
        _arch_keys(w, ir.config)
        _tokenizer_keys(w, ir)
        for name, arr, raw in tensors:
            if raw is not None and raw.name == "BF16":
                shape = list(arr.shape[:-1]) + [arr.shape[-1] // 2]
                w.add_tensor(name, arr, raw_shape=shape, raw_dtype=raw)
            elif raw is not None:
                w.add_tensor(name, arr, raw_dtype=raw)
            else:
                w.add_tensor(name, np.ascontiguousarray(arr))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- reader

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _prescan(path: Path) -> None:
    """Bound every count and length of the header by the file size before gguf-py walks it (a
    hostile count would otherwise make its reader loop for a very long time)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        buf = f.read(min(size, 256 << 20))
    p = 0

    def need(n):
        if p + n > len(buf):
            raise FormatError(f"{path}: truncated GGUF header")

    def u32():
        nonlocal p
        need(4)
        p += 4
        return struct.unpack_from("<I", buf, p - 4)[0]

    def u64():
        nonlocal p
        need(8)
        p += 8
        return struct.unpack_from("<Q", buf, p - 8)[0]

    def skip_str():
        nonlocal p
        n = u64()
        need(n)
        p += n

    def skip_value(t, depth=0):
        nonlocal p
        if t in _SCALAR:
            need(_SCALAR[t])
            p += _SCALAR[t]
        elif t == 8:
            skip_str()
        elif t == 9 and depth == 0:
            it, n = u32(), u64()
            if it in _SCALAR:
                need(n * _SCALAR[it])
                p += n * _SCALAR[it]
            elif it == 8:
                if n > (len(buf) - p) // 8:
                    raise FormatError(f"{path}: array length {n} exceeds the file")
                for _ in range(n):
                    skip_str()
            else:
                raise FormatError(f"{path}: unsupported GGUF array item type {it}")
        else:
            raise FormatError(f"{path}: unknown GGUF value type {t}")

    need(4)
    if buf[:4] != b"GGUF":
        raise FormatError(f"{path}: not a GGUF file (bad magic)")
    p = 4
    ver = u32()
    if ver != 3:
        raise FormatError(f"{path}: GGUF version {ver}; this reader supports 3")
    n_t, n_kv = u64(), u64()
    if n_t > size // 24 or n_kv > size // 12:
        raise FormatError(f"{path}: tensor/kv counts ({n_t}, {n_kv}) cannot fit a {size}-byte file")
    for _ in range(n_kv):
        skip_str()
        skip_value(u32())
    for _ in range(n_t):
        skip_str()
        nd = u32()
        if nd > 4:
            raise FormatError(f"{path}: tensor with {nd} dimensions")
        need(8 * nd + 12)
        p += 8 * nd + 12


def _field(fields, key, kind, path):
    f = fields.get(key)
    if f is None:
        raise FormatError(f"{path}: key {key!r} missing")
    try:
        v = f.contents()
    except Exception as e:  # gguf-py raises several types on malformed fields
        raise FormatError(f"{path}: key {key!r} unreadable ({e})") from None
    if not isinstance(v, kind):
        raise FormatError(f"{path}: key {key!r} has the wrong type")
    return v


def read_gguf(path: str | os.PathLike) -> QuantizedModel:
    """Read a LiftQuant GGUF into the IR, validating everything; raises only FormatError."""
    import gguf

    from .container import validate_layout

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    _prescan(path)
    try:
        r = gguf.GGUFReader(str(path))
    except FormatError:
        raise
    except Exception as e:  # gguf-py signals malformed files with assorted exception types
        raise FormatError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    fields = r.fields
    arch = _field(fields, "general.architecture", str, path)
    if arch != ARCH:
        raise FormatError(f"{path}: general.architecture is {arch!r}, expected {ARCH!r}")
    ver = _field(fields, f"{ARCH}.format_version", int, path)
    if ver != FORMAT_VERSION:
        raise FormatError(f"{path}: liftquant GGUF version {ver}; this reader supports {FORMAT_VERSION}")
    try:
        config = json.loads(_field(fields, f"{ARCH}.hf_config", str, path))
        quant = json.loads(_field(fields, f"{ARCH}.quant", str, path))
        meta = json.loads(_field(fields, f"{ARCH}.meta", str, path))
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{path}: liftquant JSON keys malformed ({e})") from None
    files = _field(fields, f"{ARCH}.tokenizer_files", list, path)
    tok = {}
    for fname in files:
        if not isinstance(fname, str) or "/" in fname or fname.startswith("."):
            raise FormatError(f"{path}: tokenizer file name {fname!r} not allowed")
        tok[fname] = _field(fields, f"{ARCH}.tokenizer.{fname}", str, path).encode("utf-8")
    if not (isinstance(config, dict) and isinstance(quant, dict) and isinstance(meta, dict)):
        raise FormatError(f"{path}: liftquant JSON keys are not objects")
    by_name = {}
    for t in r.tensors:
        if t.name in by_name:
            raise FormatError(f"{path}: duplicate tensor {t.name!r}")
        by_name[t.name] = t
    expected = validate_layout(config, quant, path, kept_shapes={k: None for k in quant.get("kept", {})})
    tensors: dict[str, torch.Tensor] = {}
    want_type = {"F16": "F16", "U8": "I8", "F32": "F32", "BF16": "BF16"}
    for cname, (dt, shape) in expected.items():
        gname = _container_to_gguf(cname)
        t = by_name.pop(gname, None)
        if t is None:
            raise FormatError(f"{path}: tensor {gname!r} missing")
        if t.tensor_type.name != want_type[dt]:
            raise FormatError(f"{path}: tensor {gname!r} is {t.tensor_type.name}, expected {want_type[dt]}")
        arr = np.asarray(t.data)
        if dt == "BF16":
            ten = torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
            ten = ten.reshape([int(x) for x in reversed(t.shape.tolist())]) if ten.numel() == int(np.prod(t.shape)) else ten
        elif dt == "U8":
            ten = torch.from_numpy(arr.view(np.uint8).copy())
        else:
            ten = torch.from_numpy(arr.copy())
        if shape is not None and tuple(ten.shape) != tuple(shape):
            raise FormatError(f"{path}: tensor {gname!r} has shape {tuple(ten.shape)}, expected {tuple(shape)}")
        if ten.is_floating_point() and not bool(torch.isfinite(ten).all()):
            raise FormatError(f"{path}: tensor {gname!r} holds non-finite values")
        tensors[cname] = ten
    if by_name:
        raise FormatError(f"{path}: unexpected tensors {sorted(by_name)[:5]}")
    from .container import ir_from_tensors

    return ir_from_tensors(config, quant, meta, tensors, tok, path)


def _container_to_gguf(cname: str) -> str:
    kind, rest = cname.split(".", 1)
    if kind == "tf":
        key, part = rest.rsplit(".", 1)
        return f"{key}.lq_{part}"
    if kind == "lin":
        name, part = rest.rsplit(".", 1)
        return f"{name}.{_SUFFIX[part]}"
    if kind == "kept":
        return rest
    raise FormatError(f"internal: no GGUF name for {cname}")



def is_liftquant_gguf(path) -> bool:
    """True if ``path`` is a GGUF file whose general.architecture is ours (cheap header peek)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    key = b"general.architecture"
    i = head.find(key)
    if head[:4] != b"GGUF" or i < 0:
        return False
    j = i + len(key) + 4 + 8  # value type (u32) + string length (u64)
    return head[j : j + len(ARCH)] == ARCH.encode() and head[j - 8 : j] == struct.pack("<Q", len(ARCH))
