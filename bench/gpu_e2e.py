"""Decode tokens/s at batch 1, context 512, for a Llama-2-7B-shaped model (random weights).

Rows: the runtime (runtime/engine.py, CUDA-graph decode step) with LiftQuant layers at 2.0 (16/8),
2.4 (24/10) and 3.0 (24/8) bits; the same runtime with FP16 weights; HF transformers FP16
``generate`` (greedy, its default cache). Speed does not depend on the weights' values.

    python bench/gpu_e2e.py [--layers 32] [--steps 128] [--json bench/results/gpu_e2e.json]

``--shape 70b`` times a Llama-2-70B-shaped model instead (8192 / 28672 wide, 64 heads, 8 key-value heads; with
``--layers`` a slice of its 80 layers, so that the FP16 runtime fits one GPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch
import transformers

from liftexport.ir import LiftedLinear, LiftTransform, choose_shape
from liftexport.runtime.engine import GROUPS, DecoderEngine, dense_groups
from liftexport.runtime.triton_linear import TritonLiftGroup

CTX = 512


MODEL_SHAPES = {"7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32),
                "70b": dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8)}


def config(layers, shape="7b"):
    return transformers.LlamaConfig(**MODEL_SHAPES[shape], num_hidden_layers=layers, vocab_size=32000,
                                    max_position_embeddings=4096, torch_dtype="float16")


def shapes(cfg):
    h, f, kv = cfg.hidden_size, cfg.intermediate_size, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    return {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, h), "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h), "mlp.down_proj": (h, f)}


def kept(cfg):
    d = {"model.embed_tokens.weight": torch.randn(cfg.vocab_size, cfg.hidden_size, device="cuda", dtype=torch.float16) * 0.02,
         "lm_head.weight": torch.randn(cfg.vocab_size, cfg.hidden_size, device="cuda", dtype=torch.float16) * 0.02,
         "model.norm.weight": torch.ones(cfg.hidden_size, device="cuda", dtype=torch.float16)}
    for i in range(cfg.num_hidden_layers):
        for n in ("input_layernorm", "post_attention_layernorm"):
            d[f"model.layers.{i}.{n}.weight"] = torch.ones(cfg.hidden_size, device="cuda", dtype=torch.float16)
    return d


def lifted(cfg, D, d):
    shp = shapes(cfg)
    groups = {}
    for i in range(cfg.num_hidden_layers):
        for g, names in GROUPS.items():
            Kin = shp[names[0]][1]
            n1, n2 = choose_shape(Kin, d)
            tf = LiftTransform(D=D, d=d, in_features=Kin, n1=n1, n2=n2, M=torch.randn(d, D) / D ** 0.5,
                               a=torch.rand(n1) + 0.5, b=torch.rand(n2 // d) + 0.5)
            rb = -(-tf.lifted // 8)
            lins = [LiftedLinear("t", shp[n][0], torch.randint(0, 256, (shp[n][0], rb), dtype=torch.uint8, device="cuda"),
                                 torch.full((shp[n][0],), 0.02 / Kin ** 0.5, device="cuda")) for n in names]
            groups[f"model.layers.{i}.{g}"] = TritonLiftGroup(lins, tf, device="cuda")
    return groups


def dense(cfg):
    w = {f"model.layers.{i}.{n}": torch.randn(*s, device="cuda", dtype=torch.float16) * 0.02
         for i in range(cfg.num_hidden_layers) for n, s in shapes(cfg).items()}
    return dense_groups(w, cfg.num_hidden_layers)


def time_engine(eng, steps):
    ids = torch.randint(0, 32000, (1, CTX), device="cuda")
    nxt = eng.prefill(ids).argmax(-1, keepdim=True)
    eng.capture()
    for p in range(CTX, CTX + 8):  # warm
        nxt = eng.step(nxt, p).argmax(-1, keepdim=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for p in range(CTX + 8, CTX + 8 + steps):
        nxt = eng.step(nxt, p).argmax(-1, keepdim=True)
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def time_hf(cfg, steps):
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg).to(torch.float16).eval()
    ids = torch.randint(0, 32000, (1, CTX), device="cuda")
    kw = dict(do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))

    def gen(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    gen(4)
    t1, tn = gen(1), gen(steps + 1)
    del model
    return steps / (tn - t1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--shape", choices=sorted(MODEL_SHAPES), default="7b", help="Llama-2 7B or 70B widths")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--rates", default="16/8,24/10,24/8,fp16", help="which models to time (fp16: the runtime's FP16)")
    ap.add_argument("--json", default="bench/results/gpu_e2e.json")
    args = ap.parse_args()
    wanted = set(args.rates.split(","))
    if not wanted <= {"16/8", "24/10", "24/8", "fp16"}:
        ap.error(f"--rates: unknown {sorted(wanted - {'16/8', '24/10', '24/8', 'fp16'})}; take 16/8, 24/10, 24/8, fp16")
    cfg = config(args.layers, args.shape)
    k = kept(cfg)
    rows = []
    for label, D, d in (("LiftQuant 2.0 (16/8)", 16, 8), ("LiftQuant 2.4 (24/10)", 24, 10), ("LiftQuant 3.0 (24/8)", 24, 8),
                        ("runtime FP16", None, None)):
        if ("fp16" if D is None else f"{D}/{d}") not in wanted:
            continue
        groups = dense(cfg) if D is None else lifted(cfg, D, d)
        wbytes = sum(sum(b.numel() * b.element_size() for b in m.buffers()) for m in groups.values())
        eng = DecoderEngine(cfg.to_dict(), k, groups, dtype=torch.float16, device="cuda", max_len=CTX + 8 + args.steps)
        tps = time_engine(eng, args.steps)
        rows.append(dict(label=label, tok_s=tps, linear_bytes=wbytes))
        print(f"{label:24s} {tps:8.1f} tok/s  (linear layers {wbytes / 2**30:.2f} GiB)", flush=True)
        del eng, groups
        gc.collect()
        torch.cuda.empty_cache()
    if not args.no_hf:
        tps = time_hf(cfg, args.steps)
        rows.append(dict(label="HF transformers FP16 generate", tok_s=tps))
        print(f"{'HF transformers FP16':24s} {tps:8.1f} tok/s", flush=True)
    fp16 = next((r["tok_s"] for r in rows if r["label"] == "runtime FP16"), float("nan"))
    print(f"\n{f'model (Llama-2-{args.shape.upper()} shape)':32s} {'tok/s':>8} {'x FP16 runtime':>15}")
    for r in rows:
        print(f"{r['label']:32s} {r['tok_s']:8.1f} {r['tok_s'] / fp16:15.2f}")
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), context=CTX,
                       shape=args.shape, layers=args.layers, steps=args.steps, torch=torch.__version__,
                       transformers=transformers.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
