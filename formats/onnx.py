"""ONNX export of the IR: the whole decoder LM with a KV cache, lifted linears as ``LiftMatMul``.

Graph I/O follows what ORT generation loops expect: ``input_ids`` [batch, seq] int64,
``attention_mask`` [batch, total] int64, ``position_ids`` [batch, seq] int64,
``past_key_values.{i}.key|value`` [batch, kv_heads, past, head_dim] float32 -> ``logits``
[batch, seq, vocab] float32, ``present.{i}.key|value`` [batch, kv_heads, total, head_dim].

Three lowerings of a lifted linear (``ops``), all numerically the same semantics (spec/onnx-ops.md):
- ``custom``: one ``ai.liftquant::LiftMatMul`` node (runs with the liftexport ORT library); the
  model also carries a model-local function with that name, so onnx.checker, shape inference and
  runtimes without the library see its meaning in standard ops.
- ``standard``: that function inlined: only ai.onnx ops (BitShift/BitwiseAnd unpacking, MatMul).
- ``contrib``: the transform as MatMuls, then ``com.microsoft::MatMulNBits`` (bits=2, codes 1/3
  decode to -1/+1 with the default zero point 2): stock ORT, 2*D/d stored bits per weight.

``lut="int8"`` (custom only) asks the library for its approximate int8 lookup-table kernel
(``lut_bits=8`` on every LiftMatMul node).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx  # noqa: I001  (the onnx package, not this module)
import torch
from onnx import TensorProto, helper, numpy_helper

from liftexport.errors import FormatError, UnsupportedModelError
from liftexport.ir import LiftedLinear, QuantizedModel, unpack_codes

DOMAIN = "ai.liftquant"
OP = "LiftMatMul"
OP_VERSION = 1
OPSET = 21
IR_VERSION = 10  # onnx 1.23 writes 14 by default, which ORT <= 1.31 rejects
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
OPS = ("custom", "standard", "contrib")
LUT = {"none": 0, "int8": 8}  # --onnx-lut: LiftMatMul's lut_bits (int8 = the approximate lookup-table kernel)
NEG_INF = float(np.finfo(np.float32).min)


def _f16(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float16).numpy()


class _G:
    """A tiny graph-building helper: unique names, constants, initializers."""

    def __init__(self):
        self.nodes, self.inits, self._n = [], {}, 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def op(self, op_type: str, inputs, n_out: int = 1, domain: str = "", name: str | None = None, **attrs):
        outs = [self.name(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name or self.name("n_" + op_type),
                                           domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = f"c_{arr.dtype}_{arr.shape}_{arr.tobytes().hex()[:64]}_{hash(arr.tobytes())}"
        if key not in self.inits:
            self.inits[key] = numpy_helper.from_array(arr, name=self.name("const"))
        return self.inits[key].name

    def init(self, name: str, arr: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(arr), name=name)
        return name


# ----------------------------------------------------------------------------- LiftMatMul function


def lift_matmul_function() -> onnx.FunctionProto:
    """LiftMatMul in standard ops (the op's reference semantics; see spec/onnx-ops.md)."""
    g = _G()
    X, codes, scales, M, a, b, s1, bias = "X", "codes", "scales", "M", "a", "b", "s1", "bias"

    def attr_const(name):
        out = g.name("attr_" + name)
        g.nodes.append(_ref_const(out, name, g))
        return out

    IN, OUT, D, d, n1, n2 = (attr_const(k) for k in ("in_features", "out_features", "D", "d", "n1", "n2"))
    f = lambda x: g.op("Cast", [x], to=TensorProto.FLOAT)  # noqa: E731
    one, zero = g.const(1), g.const(0)

    def dct(n):  # orthonormal DCT-II matrix [n, n] as float
        nf = f(n)
        rng = f(g.op("Range", [zero, n, one]))
        kcol = g.op("Unsqueeze", [rng, g.const([1])])
        irow = g.op("Unsqueeze", [rng, g.const([0])])
        two_i1 = g.op("Add", [g.op("Mul", [irow, g.const(2.0, np.float32)]), g.const(1.0, np.float32)])
        arg = g.op("Div", [g.op("Mul", [g.op("Mul", [two_i1, kcol]), g.const(math.pi, np.float32)]),
                           g.op("Mul", [nf, g.const(2.0, np.float32)])])
        C = g.op("Cos", [arg])
        base = g.op("Sqrt", [g.op("Div", [g.const(2.0, np.float32), nf])])
        first = g.op("Sqrt", [g.op("Div", [g.const(1.0, np.float32), nf])])
        ck = g.op("Where", [g.op("Equal", [kcol, g.const(0.0, np.float32)]), first, base])
        return g.op("Mul", [C, ck])

    C1, C2 = dct(n1), dct(n2)
    nb = g.op("Div", [n2, d])
    L = g.op("Div", [C1, g.op("Unsqueeze", [f(a), g.const([1])])])
    C2T3 = g.op("Reshape", [g.op("Transpose", [C2], perm=[1, 0]), g.op("Concat", [g.op("Unsqueeze", [n2, g.const([0])]),
                g.op("Unsqueeze", [nb, g.const([0])]), g.op("Unsqueeze", [d, g.const([0])])], axis=0)])
    R3 = g.op("MatMul", [C2T3, f(M)])  # [n2, nb, D]
    R3 = g.op("Div", [R3, g.op("Reshape", [f(b), g.const([1, -1, 1])])])
    R = g.op("Reshape", [R3, g.op("Concat", [g.op("Unsqueeze", [n2, g.const([0])]), g.const([-1])], axis=0)])
    # input: [..., in] -> [T, in] -> pad to n -> / s1 -> [T, n1, n2] -> L X R -> [T, K]
    xshape = g.op("Shape", [X])
    lead = g.op("Slice", [xshape, g.const([0]), g.const([-1])])
    X2 = g.op("Reshape", [X, g.op("Concat", [g.const([-1]), g.op("Unsqueeze", [IN, g.const([0])])], axis=0)])
    n = g.op("Mul", [n1, n2])
    padn = g.op("Sub", [n, IN])
    pads = g.op("Concat", [g.const([0, 0, 0]), g.op("Unsqueeze", [padn, g.const([0])])], axis=0)
    Xp = g.op("Div", [g.op("Pad", [X2, pads]), f(s1)])
    X3 = g.op("Reshape", [Xp, g.op("Concat", [g.const([-1]), g.op("Unsqueeze", [n1, g.const([0])]),
                                               g.op("Unsqueeze", [n2, g.const([0])])], axis=0)])
    U = g.op("MatMul", [g.op("MatMul", [L, X3]), R])
    K = g.op("Mul", [g.op("Mul", [n1, nb]), D])
    u = g.op("Reshape", [U, g.op("Concat", [g.const([-1]), g.op("Unsqueeze", [K, g.const([0])])], axis=0)])
    # codes [N, B] uint8 -> bits [N, B*8] -> first K -> +-1
    shifts = g.const(np.arange(8, dtype=np.uint8), np.uint8)
    bits = g.op("BitwiseAnd", [g.op("BitShift", [g.op("Unsqueeze", [codes, g.const([2])]), shifts], direction="RIGHT"),
                               g.const(1, np.uint8)])
    bits = g.op("Reshape", [bits, g.op("Concat", [g.op("Unsqueeze", [OUT, g.const([0])]), g.const([-1])], axis=0)])
    bits = g.op("Slice", [bits, g.const([0]), g.op("Unsqueeze", [K, g.const([0])]), g.const([1])])
    Q = g.op("Sub", [g.op("Mul", [f(bits), g.const(2.0, np.float32)]), g.const(1.0, np.float32)])
    y = g.op("Add", [g.op("Mul", [g.op("MatMul", [u, g.op("Transpose", [Q], perm=[1, 0])]), f(scales)]), f(bias)])
    outshape = g.op("Concat", [lead, g.op("Unsqueeze", [OUT, g.const([0])])], axis=0)
    g.nodes.append(helper.make_node("Reshape", [y, outshape], ["Y"], name="n_out"))
    consts = [helper.make_node("Constant", [], [t.name], value=t, name="k_" + t.name) for t in g.inits.values()]
    # lut_bits (optional, default 0) selects the kernel's approximate fast mode; the body is the exact
    # semantics and ignores it.
    return helper.make_function(
        DOMAIN, OP, ["X", "codes", "scales", "M", "a", "b", "s1", "bias"], ["Y"], consts + g.nodes,
        [helper.make_opsetid("", OPSET)], attributes=["in_features", "out_features", "D", "d", "n1", "n2"],
        attribute_protos=[helper.make_attribute("lut_bits", 0)])


def _ref_const(out: str, attr: str, g: _G) -> onnx.NodeProto:
    node = helper.make_node("Constant", [], [out], name=g.name("n_attr_" + attr))
    a = onnx.AttributeProto()
    a.name = "value_int"
    a.ref_attr_name = attr
    a.type = onnx.AttributeProto.INT
    node.attribute.append(a)
    return node


# ----------------------------------------------------------------------------- model graph


class _Exporter:
    def __init__(self, ir: QuantizedModel, ops: str, lut: str = "none"):
        if ir.model_type not in SUPPORTED:
            raise UnsupportedModelError(f"ONNX export supports {', '.join(SUPPORTED)}; got {ir.model_type!r}")
        if ops not in OPS:
            raise FormatError(f"--onnx-ops {ops!r}: expected one of {', '.join(OPS)}")
        if lut not in LUT:
            raise FormatError(f"--onnx-lut {lut!r}: expected one of {', '.join(LUT)}")
        if LUT[lut] and ops != "custom":
            raise FormatError(f"--onnx-lut {lut} needs --onnx-ops custom (it is an attribute of LiftMatMul)")
        self.ir, self.ops, self.g = ir, ops, _G()
        self.lut_attrs = {"lut_bits": LUT[lut]} if LUT[lut] else {}
        c = ir.config
        self.H = c["hidden_size"]
        self.nh = c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads") or self.nh
        self.hd = c.get("head_dim") or self.H // self.nh
        self.L = c["num_hidden_layers"]
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.vocab = c["vocab_size"]
        self.inv_freq, self.rope_scale = _rope_tables(ir)

    def kept(self, name: str) -> str:
        t = self.ir.kept.get(name)
        if t is None:
            raise FormatError(f"ONNX export: tensor {name} missing from the IR")
        return self.g.init(name, t.detach().float().numpy())

    def rmsnorm(self, x: str, wname: str) -> str:
        g = self.g
        var = g.op("ReduceMean", [g.op("Mul", [x, x]), g.const([-1])], keepdims=1)
        inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [var, g.const(self.eps, np.float32)])])])
        return g.op("Mul", [g.op("Mul", [x, inv]), self.kept(wname)])

    def linear(self, x: str, name: str) -> str:
        g = self.g
        lin = self.ir.linears.get(name)
        if not isinstance(lin, LiftedLinear):
            raise FormatError(f"ONNX export: {name} is not a lifted linear (RTN layers are not exported)")
        tf = self.ir.transforms[lin.transform]
        key = lin.transform
        if self.ops == "contrib":
            return self._linear_contrib(x, name, lin, tf)
        M = g.init(f"lq.{key}.M", _f16(tf.M))
        a = g.init(f"lq.{key}.a", _f16(tf.a))
        b = g.init(f"lq.{key}.b", _f16(tf.b))
        s1 = g.init(f"lq.{key}.s1", _f16(tf.s1 if tf.s1 is not None else torch.ones(tf.n)))
        codes = g.init(f"lq.{name}.codes", lin.codes.numpy().astype(np.uint8))
        scales = g.init(f"lq.{name}.scales", _f16(lin.scales))
        bias = g.init(f"lq.{name}.bias", _f16(lin.bias if lin.bias is not None else torch.zeros(lin.out_features)))
        return g.op(OP, [x, codes, scales, M, a, b, s1, bias], domain=DOMAIN, name=name,
                    in_features=tf.in_features, out_features=lin.out_features, D=tf.D, d=tf.d, n1=tf.n1, n2=tf.n2,
                    **self.lut_attrs)

    def _linear_contrib(self, x, name, lin, tf):
        from liftexport.transform import fused_factors

        g = self.g
        key = lin.transform
        Lm, Rm = fused_factors(tf.M, tf.a, tf.b, tf.n1, tf.n2, torch.float32)
        n = tf.n
        xs = g.op("Shape", [x])
        lead = g.op("Slice", [xs, g.const([0]), g.const([-1])])
        X2 = g.op("Reshape", [x, g.const([-1, tf.in_features])])
        if n > tf.in_features:
            X2 = g.op("Pad", [X2, g.const([0, 0, 0, n - tf.in_features])])
        if tf.s1 is not None:
            X2 = g.op("Div", [X2, g.init(f"lq.{key}.s1f", tf.s1.float().numpy())])
        X3 = g.op("Reshape", [X2, g.const([-1, tf.n1, tf.n2])])
        U = g.op("MatMul", [g.op("MatMul", [g.init(f"lq.{key}.L", Lm.numpy()), X3]), g.init(f"lq.{key}.R", Rm.numpy())])
        K = tf.lifted
        u = g.op("Reshape", [U, g.const([-1, K])])
        block = 32
        kb = -(-K // block)
        bits = unpack_codes(lin.codes, K).numpy().astype(np.uint8)
        q2 = np.zeros((lin.out_features, kb * block), dtype=np.uint8)
        q2[:, :K] = np.where(bits, 3, 1)
        q2[:, K:] = 2  # padding decodes to 0
        q2 = q2.reshape(lin.out_features, kb, block // 4, 4)
        packed = (q2[..., 0] | (q2[..., 1] << 2) | (q2[..., 2] << 4) | (q2[..., 3] << 6)).astype(np.uint8)
        sc = np.repeat(lin.scales.float().numpy()[:, None], kb, axis=1).reshape(-1).astype(np.float32)
        ins = [u, g.init(f"lq.{name}.B2", packed), g.init(f"lq.{name}.scales2", sc)]
        if lin.bias is not None:
            ins += ["", "", g.init(f"lq.{name}.biasf", lin.bias.float().numpy())]
        y = g.op("MatMulNBits", ins, domain="com.microsoft", name=name, K=K, N=lin.out_features, bits=2,
                 block_size=block)
        return g.op("Reshape", [y, g.op("Concat", [lead, g.const([lin.out_features])], axis=0)])

    def rotary(self, x: str, cos: str, sin: str) -> str:
        g = self.g
        half = self.hd // 2
        x1, x2 = g.op("Split", [x, g.const([half, half])], n_out=2, axis=-1)
        rot = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rot, sin])])

    def build(self) -> onnx.ModelProto:
        g = self.g
        ir = self.ir
        inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                  helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
                  helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", self.vocab])]
        for i in range(self.L):
            for kv in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", TensorProto.FLOAT,
                                                            ["batch", self.nkv, "past", self.hd]))
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", TensorProto.FLOAT,
                                                             ["batch", self.nkv, "total", self.hd]))
        h = g.op("Gather", [self.kept("model.embed_tokens.weight"), "input_ids"], axis=0)
        # rotary tables from position_ids (the same float32 products transformers computes)
        pos = g.op("Cast", ["position_ids"], to=TensorProto.FLOAT)
        freqs = g.op("Mul", [g.op("Unsqueeze", [pos, g.const([-1])]), g.init("rope.inv_freq", self.inv_freq)])
        emb = g.op("Concat", [freqs, freqs], axis=-1)
        sc = g.const(self.rope_scale, np.float32)
        cos = g.op("Unsqueeze", [g.op("Mul", [g.op("Cos", [emb]), sc]), g.const([1])])
        sin = g.op("Unsqueeze", [g.op("Mul", [g.op("Sin", [emb]), sc]), g.const([1])])
        # additive mask [batch, 1, seq, total]: causal by cache position and the attention mask
        seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(1)], axis=0)
        total = g.op("Gather", [g.op("Shape", ["attention_mask"]), g.const(1)], axis=0)
        past = g.op("Sub", [total, seq])
        qpos = g.op("Unsqueeze", [g.op("Range", [past, total, g.const(1)]), g.const([1])])
        kpos = g.op("Unsqueeze", [g.op("Range", [g.const(0), total, g.const(1)]), g.const([0])])
        allowed = g.op("LessOrEqual", [kpos, qpos])  # [seq, total]
        am = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), g.const([1, 2])])
        allowed = g.op("And", [g.op("Unsqueeze", [allowed, g.const([0, 1])]), am])
        mask = g.op("Where", [allowed, g.const(0.0, np.float32), g.const(NEG_INF, np.float32)])
        scale = g.const(1.0 / math.sqrt(self.hd), np.float32)
        rep = self.nh // self.nkv
        for i in range(self.L):
            p = f"model.layers.{i}."
            x = self.rmsnorm(h, p + "input_layernorm.weight")
            q = self.linear(x, p + "self_attn.q_proj")
            k = self.linear(x, p + "self_attn.k_proj")
            v = self.linear(x, p + "self_attn.v_proj")
            q = g.op("Reshape", [q, g.const([0, 0, self.nh, self.hd])])
            k = g.op("Reshape", [k, g.const([0, 0, self.nkv, self.hd])])
            v = g.op("Reshape", [v, g.const([0, 0, self.nkv, self.hd])])
            if ir.model_type == "qwen3":
                q = self.rmsnorm(q, p + "self_attn.q_norm.weight")
                k = self.rmsnorm(k, p + "self_attn.k_norm.weight")
            q = g.op("Transpose", [q], perm=[0, 2, 1, 3])
            k = g.op("Transpose", [k], perm=[0, 2, 1, 3])
            v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
            q = self.rotary(q, cos, sin)
            k = self.rotary(k, cos, sin)
            kc = g.op("Concat", [f"past_key_values.{i}.key", k], axis=2)
            vc = g.op("Concat", [f"past_key_values.{i}.value", v], axis=2)
            g.nodes.append(helper.make_node("Identity", [kc], [f"present.{i}.key"], name=f"present_k_{i}"))
            g.nodes.append(helper.make_node("Identity", [vc], [f"present.{i}.value"], name=f"present_v_{i}"))
            if rep > 1:
                shp = g.op("Shape", [kc])
                b_, t_ = g.op("Gather", [shp, g.const([0])], axis=0), g.op("Gather", [shp, g.const([2])], axis=0)
                exp_shape = g.op("Concat", [b_, g.const([self.nkv, rep]), t_, g.const([self.hd])], axis=0)
                flat = g.op("Concat", [b_, g.const([self.nh]), t_, g.const([self.hd])], axis=0)
                kc = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [kc, g.const([2])]), exp_shape]), flat])
                vc = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [vc, g.const([2])]), exp_shape]), flat])
            s = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [kc], perm=[0, 1, 3, 2])]), scale]), mask])
            att = g.op("MatMul", [g.op("Softmax", [s], axis=-1), vc])
            att = g.op("Reshape", [g.op("Transpose", [att], perm=[0, 2, 1, 3]), g.const([0, 0, self.nh * self.hd])])
            h = g.op("Add", [h, self.linear(att, p + "self_attn.o_proj")])
            x = self.rmsnorm(h, p + "post_attention_layernorm.weight")
            gate = self.linear(x, p + "mlp.gate_proj")
            up = self.linear(x, p + "mlp.up_proj")
            act = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
            h = g.op("Add", [h, self.linear(g.op("Mul", [act, up]), p + "mlp.down_proj")])
        h = self.rmsnorm(h, "model.norm.weight")
        head = "lm_head.weight" if "lm_head.weight" in ir.kept else "model.embed_tokens.weight"
        hs = g.op("Shape", [h])
        h2 = g.op("Reshape", [h, g.const([-1, self.H])])
        logits = g.op("Gemm", [h2, self.kept(head)], transB=1)
        g.nodes.append(helper.make_node("Reshape", [logits, g.op("Concat", [g.op("Slice", [hs, g.const([0]), g.const([2])]),
                                                                           g.const([self.vocab])], axis=0)],
                                        ["logits"], name="logits_out"))
        graph = helper.make_graph(g.nodes, "liftquant_decoder", inputs, outputs, list(g.inits.values()))
        opsets = [helper.make_opsetid("", OPSET)]
        funcs = []
        if self.ops in ("custom", "standard"):
            opsets.append(helper.make_opsetid(DOMAIN, OP_VERSION))
            funcs.append(lift_matmul_function())
        if self.ops == "contrib":
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        model = helper.make_model(graph, opset_imports=opsets, functions=funcs, producer_name="liftexport",
                                  ir_version=IR_VERSION)
        if self.ops == "standard":
            import onnx.inliner

            model = onnx.inliner.inline_local_functions(model)
            del model.opset_import[:]
            model.opset_import.append(helper.make_opsetid("", OPSET))
            model.ir_version = IR_VERSION
        return model


def _rope_tables(ir: QuantizedModel):
    """inv_freq and attention scaling from transformers' own rotary module for this config."""
    import copy

    from transformers import AutoConfig, AutoModelForCausalLM

    d = copy.deepcopy(ir.config)
    mt = d.pop("model_type")
    d["num_hidden_layers"] = 0
    cfg = AutoConfig.for_model(mt, **d)
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    rot = m.model.rotary_emb
    rot.to_empty(device="cpu")
    m._init_weights(rot)
    inv = getattr(rot, "inv_freq").float().numpy()
    return inv, float(getattr(rot, "attention_scaling", 1.0))


def export_onnx(ir: QuantizedModel, out_dir: str | os.PathLike, ops: str = "custom", lut: str = "none") -> Path:
    """Write model.onnx (+ model.onnx.data), the tokenizer files and liftquant_model.json to out_dir.

    ``lut="int8"`` (custom ops only) sets ``lut_bits=8`` on every LiftMatMul: the library's approximate
    int8 lookup-table kernel instead of the exact float32 one (spec/onnx-ops.md).

    Written into a temporary sibling directory and renamed into place (no half-written output).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FormatError(f"{out}: output directory exists and is not empty")
    model = _Exporter(ir, ops, lut).build()
    onnx.checker.check_model(model, full_check=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="." + out.name + ".", dir=out.parent))
    try:
        onnx.save_model(model, str(tmp / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
        for fname, data in ir.tokenizer.items():
            (tmp / fname).write_bytes(data)
        c = ir.config
        desc = {
            "format": "liftquant-onnx", "version": 1, "model_type": ir.model_type, "ops": ops,
            "custom_op": {"domain": DOMAIN, "op": OP, "version": OP_VERSION, "lut_bits": LUT[lut]} if ops == "custom" else None,
            "num_layers": c["num_hidden_layers"], "num_key_value_heads": c.get("num_key_value_heads") or c["num_attention_heads"],
            "head_dim": c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], "vocab_size": c["vocab_size"],
            "eos_token_id": c.get("eos_token_id"), "bos_token_id": c.get("bos_token_id"),
            "inputs": ["input_ids", "attention_mask", "position_ids", "past_key_values.{i}.key", "past_key_values.{i}.value"],
            "outputs": ["logits", "present.{i}.key", "present.{i}.value"], "meta": ir.meta,
        }
        (tmp / "liftquant_model.json").write_text(json.dumps(desc, indent=1, default=str))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
