"""Regenerate the conformance vectors in this folder (deterministic; run from the repo root):

    .venv/bin/python spec/vectors/make_vectors.py

layers.safetensors        lifted linears of several (D, d) + inputs + float64 expected outputs
tiny_model.lqt            a complete 2-block Llama-family model (256-token byte-level vocabulary)
tiny_model.expected.safetensors   prompt token ids and the reference runtime's logits
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
LAYER_CONFIGS = [("16/8", 40, 24), ("24/10", 64, 16), ("25/10", 96, 8), ("32/20", 50, 12), ("24/8", 33, 20)]


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token=None)


def random_lift_layer(cfg: str, in_features: int, out_features: int, gen: torch.Generator, key: str):
    from liftexport.ir import LiftedLinear, LiftTransform, pack_codes
    from liftexport.lattice.config import LatticeConfig
    from liftexport.lattice.menu import load_shipped
    from liftexport.transform import choose_shape

    c = LatticeConfig.parse(cfg)
    lat = load_shipped(c)
    n1, n2 = choose_shape(in_features, c.d)
    h = lambda t: t.half().float()  # noqa: E731
    tf = LiftTransform(D=c.D, d=c.d, in_features=in_features, n1=n1, n2=n2, M=h(lat.M),
                       a=h(torch.rand(n1, generator=gen) + 0.5), b=h(torch.rand(n2 // c.d, generator=gen) + 0.5),
                       s1=h((torch.rand(n1 * n2, generator=gen) + 0.5) * (torch.randint(0, 2, (n1 * n2,), generator=gen) * 2 - 1)))
    K = tf.lifted
    codes = torch.rand(out_features, K, generator=gen) > 0.5
    lin = LiftedLinear(key, out_features, pack_codes(codes), h(torch.rand(out_features, generator=gen) * 0.1),
                       h(torch.randn(out_features, generator=gen) * 0.01))
    return tf, lin


def reference_float64(tf, lin, x: torch.Tensor) -> torch.Tensor:
    """Spec section 4, written out step by step in float64 (independent of runtime/reference.py)."""
    from liftexport.ir import unpack_codes
    from liftexport.transform import dct_matrix

    n = tf.n1 * tf.n2
    xt = torch.nn.functional.pad(x.double(), (0, n - tf.in_features))
    if tf.s1 is not None:
        xt = xt / tf.s1.double()
    X = xt.view(-1, tf.n1, tf.n2)
    Z = dct_matrix(tf.n1, torch.float64) @ X @ dct_matrix(tf.n2, torch.float64).T
    Z = Z.view(-1, tf.n1, tf.n2 // tf.d, tf.d) / (tf.a.double()[:, None, None] * tf.b.double()[None, :, None])
    u = (Z @ tf.M.double()).reshape(x.shape[0], -1)
    q = unpack_codes(lin.codes, tf.lifted).double() * 2 - 1
    return (u @ q.T) * lin.scales.double() + lin.bias.double()


def make_layers():
    from liftexport.formats.container import to_tensors
    from liftexport.ir import QuantizedModel

    gen = torch.Generator().manual_seed(1234)
    ir = QuantizedModel(config={"model_type": "llama"}, tokenizer={})
    extra = {}
    for cfg, IC, OC in LAYER_CONFIGS:
        key = "layer_" + cfg.replace("/", "_")
        tf, lin = random_lift_layer(cfg, IC, OC, gen, key)
        ir.transforms[key] = tf
        ir.linears[key] = lin
        x = torch.randn(3, IC, generator=gen)
        extra[f"input.{key}"] = x
        extra[f"expected.{key}"] = reference_float64(tf, lin, x).float()
    tensors, meta = to_tensors(ir)
    tensors.update(extra)
    meta.pop("sha256")
    meta["note"] = "conformance vectors: tf.*/lin.* as in a container; input.*/expected.* per linear"
    save_file(tensors, str(HERE / "layers.safetensors"), metadata=meta)


def make_tiny_model():
    import transformers

    from liftexport.formats.container import write_container
    from liftexport.ir import QuantizedModel
    from liftexport.runtime.reference import build_model

    tok = byte_tokenizer()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        tfiles = {p.name: p.read_bytes() for p in sorted(Path(d).iterdir())}
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=40, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True)
    gen = torch.Generator().manual_seed(99)
    ir = QuantizedModel(config=cfg.to_dict(), tokenizer=tfiles, meta={"note": "conformance vector"})
    h = 40
    ir.kept["model.embed_tokens.weight"] = torch.randn(256, h, generator=gen).half()
    ir.kept["model.norm.weight"] = (1 + 0.1 * torch.randn(h, generator=gen)).half()
    shapes = {"self_attn.q_proj": (40, 40), "self_attn.k_proj": (20, 40), "self_attn.v_proj": (20, 40),
              "self_attn.o_proj": (40, 40), "mlp.gate_proj": (96, 40), "mlp.up_proj": (96, 40),
              "mlp.down_proj": (40, 96)}
    groups = {"attn_in": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
              "attn_out": ["self_attn.o_proj"], "mlp_in": ["mlp.gate_proj", "mlp.up_proj"], "mlp_out": ["mlp.down_proj"]}
    cfgs = {"attn_in": "24/10", "attn_out": "16/8", "mlp_in": "25/10", "mlp_out": "24/8"}
    for i in range(2):
        p = f"model.layers.{i}."
        ir.kept[p + "input_layernorm.weight"] = (1 + 0.1 * torch.randn(h, generator=gen)).half()
        ir.kept[p + "post_attention_layernorm.weight"] = (1 + 0.1 * torch.randn(h, generator=gen)).half()
        for g, names in groups.items():
            IC = shapes[names[0]][1]
            tf = None
            for name in names:
                OC = shapes[name][0]
                tf_i, lin = random_lift_layer(cfgs[g], IC, OC, gen, p + g)
                lin.scales = (lin.scales * 4).half().float()
                tf = tf or tf_i
                ir.linears[p + name] = lin
            ir.transforms[p + g] = tf
    write_container(ir, HERE / "tiny_model.lqt")
    prompt = torch.tensor([[ord(c) % 256 for c in "LiftQuant vectors"]], dtype=torch.long)
    with torch.no_grad():
        logits = build_model(ir)(input_ids=prompt).logits[0].float()
    save_file({"prompt": prompt[0], "logits": logits.contiguous()}, str(HERE / "tiny_model.expected.safetensors"))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))
    make_layers()
    make_tiny_model()
    print(json.dumps({p.name: p.stat().st_size for p in sorted(HERE.iterdir()) if p.suffix != ".py"}))
