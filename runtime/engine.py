"""Fast decoding of Llama-family models: own forward, static KV cache, CUDA-graph decode step.

``DecoderEngine`` runs a decoder (llama, mistral, qwen2, qwen3) from its HF config, its kept
tensors (embeddings, norms, lm_head) and one module per linear group of each block:
``attn_in`` (q, k, v), ``attn_out`` (o), ``mlp_in`` (gate, up), ``mlp_out`` (down), each returning
a tuple of outputs. ``lifted_groups`` makes those from an IR (Triton kernels: runtime.triton_linear);
``dense_groups`` from float weights (the same runtime in FP16, for comparison). Activations are
fp16/bf16 on the GPU (fp32 works too, e.g. on the CPU for tests). The decode step (one token per
sequence) is captured once as a CUDA graph and replayed; on CUDA its rotary embedding, cache write and
attention run in Triton (kernels/triton/decode_attention). The prompt runs eagerly.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FormatError, UnsupportedModelError
from ..ir import LiftedLinear, QuantizedModel
from ..kernels.triton import decode_attention as DA
from .triton_linear import TritonLiftGroup, rms_norm, torch_prologue

ENGINE_TYPES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}
GROUPS = {
    "attn_in": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn_out": ("self_attn.o_proj",),
    "mlp_in": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp_out": ("mlp.down_proj",),
}


def check_supported(config: dict) -> None:
    mt = config.get("model_type")
    if mt not in ENGINE_TYPES:
        raise UnsupportedModelError(f"the CUDA engine runs {', '.join(ENGINE_TYPES)}; got {mt!r}")
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"the CUDA engine supports hidden_act 'silu', got {config.get('hidden_act')!r}")


class DenseGroup(nn.Module):
    """Linears sharing one input as one matmul (weights concatenated), outputs split."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor | None] | None = None):
        super().__init__()
        self.splits = [w.shape[0] for w in weights]
        self.register_buffer("weight", torch.cat(weights))
        b = None
        if biases and any(x is not None for x in biases):
            b = torch.cat([x if x is not None else torch.zeros(n, dtype=self.weight.dtype, device=self.weight.device)
                           for x, n in zip(biases, self.splits)])
        self.register_buffer("bias", b)

    def forward(self, x, rms=None, glu: bool = False, residual=None, split: bool = True):
        x = torch_prologue(x, rms, glu, self.weight.shape[1])
        y = F.linear(x, self.weight, self.bias)
        if residual is not None:
            y = y + residual
        return y.split(self.splits, dim=-1) if split else (y,)


def lifted_groups(ir: QuantizedModel, device) -> dict[str, nn.Module]:
    """{"model.layers.{i}.{group}": TritonLiftGroup} for every block of a LiftQuant IR."""
    out = {}
    for i in range(ir.config["num_hidden_layers"]):
        for g, names in GROUPS.items():
            lins = [ir.linears.get(f"model.layers.{i}.{n}") for n in names]
            if not all(isinstance(x, LiftedLinear) for x in lins):
                raise UnsupportedModelError(f"the CUDA engine runs LiftQuant layers; block {i} {g} is not lifted")
            keys = {x.transform for x in lins}
            if len(keys) != 1 or next(iter(keys)) not in ir.transforms:
                raise FormatError(f"block {i} {g}: linears must share one transform, got {sorted(keys)}")
            out[f"model.layers.{i}.{g}"] = TritonLiftGroup(lins, ir.transforms[keys.pop()], device=device)
    return out


def dense_groups(weights: dict[str, torch.Tensor], num_layers: int, biases: dict | None = None) -> dict[str, nn.Module]:
    """The same grouping over float weights keyed by HF linear name (without '.weight')."""
    biases = biases or {}
    return {f"model.layers.{i}.{g}": DenseGroup([weights[f"model.layers.{i}.{n}"] for n in names],
                                                [biases.get(f"model.layers.{i}.{n}") for n in names])
            for i in range(num_layers) for g, names in GROUPS.items()}


def _rope_tables(config: dict, max_len: int):
    from transformers import AutoConfig

    mt = config["model_type"]
    cfg = {k: v for k, v in config.items() if k not in ("model_type", "quantization_config")}
    hf_cfg = AutoConfig.for_model(mt, **cfg)
    mod = importlib.import_module(f"transformers.models.{mt}.modeling_{mt}")
    rope = getattr(mod, f"{ENGINE_TYPES[mt]}RotaryEmbedding")(config=hf_cfg)
    pos = torch.arange(max_len)[None]
    cos, sin = rope(torch.zeros(1, dtype=torch.float32), pos)
    return cos[0].float(), sin[0].float()


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class DecoderEngine:
    def __init__(self, config: dict, kept: dict[str, torch.Tensor], groups: dict[str, nn.Module], *,
                 dtype=torch.float16, device="cuda", max_len: int = 1024, batch: int = 1):
        check_supported(config)
        self.cfg = config
        self.dtype, self.device = dtype, torch.device(device)
        self.max_len, self.batch = max_len, batch
        self.L = config["num_hidden_layers"]
        self.H = config["num_attention_heads"]
        self.KVH = config.get("num_key_value_heads") or self.H
        self.hd = config.get("head_dim") or config["hidden_size"] // self.H
        self.eps = config.get("rms_norm_eps", 1e-6)
        sw = config.get("sliding_window") if config.get("use_sliding_window", True) else None
        if sw and max_len > sw:
            raise UnsupportedModelError(f"max_len {max_len} exceeds the sliding window {sw}; the engine has no window")

        def t(name):
            if name not in kept:
                raise FormatError(f"engine: tensor {name} missing")
            return kept[name].to(self.device, dtype)

        self.embed = t("model.embed_tokens.weight")
        self.lm_head = t("lm_head.weight") if "lm_head.weight" in kept else self.embed
        self.norm = t("model.norm.weight")
        self.ln_in = [t(f"model.layers.{i}.input_layernorm.weight") for i in range(self.L)]
        self.ln_post = [t(f"model.layers.{i}.post_attention_layernorm.weight") for i in range(self.L)]
        qk = config["model_type"] == "qwen3"
        self.q_norm = [t(f"model.layers.{i}.self_attn.q_norm.weight") for i in range(self.L)] if qk else None
        self.k_norm = [t(f"model.layers.{i}.self_attn.k_norm.weight") for i in range(self.L)] if qk else None
        self.groups = [{g: groups[f"model.layers.{i}.{g}"] for g in GROUPS} for i in range(self.L)]
        cos, sin = _rope_tables(config, max_len)
        self.cos, self.sin = cos.to(self.device, dtype), sin.to(self.device, dtype)
        shape = (self.L, batch, self.KVH, max_len, self.hd)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=self.device)
        self.key_pos = torch.arange(max_len, device=self.device)
        #: decode steps (one token) take kernels/triton/decode_attention on CUDA (rotary embedding, cache
        #: write and attention in one launch) where the model has no q/k norms (Qwen3) and the kernel
        #: takes the head size; the torch path otherwise
        self.fused_attention = self.device.type == "cuda" and self.q_norm is None and DA.supported(self.hd)
        #: the decode-attention kernel's per-(sequence, head) counters (zero between calls), shared by the
        #: layers (one layer's attention completes before the next one's starts)
        self.attn_counters = torch.zeros(batch * self.H, dtype=torch.int32, device=self.device)
        self.graph = None

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of the last position; ids [batch, T] at cache positions pos [T]."""
        B, T = ids.shape
        fused = T == 1 and self.fused_attention
        x = F.embedding(ids, self.embed)
        if not fused:
            cos, sin = self.cos[pos][None, None], self.sin[pos][None, None]
            mask = self.key_pos[None, :] <= pos[:, None]
        for i, grp in enumerate(self.groups):
            q, k, v = grp["attn_in"](x, rms=(self.ln_in[i], self.eps))
            kc, vc = self.k_cache[i], self.v_cache[i]
            if fused:  # rotary embedding, cache write and attention in Triton
                cnt = self.attn_counters if B * self.H <= self.attn_counters.numel() else None
                a = DA.decode_attention(q[:, 0], k[:, 0], v[:, 0], self.cos, self.sin, kc, vc, pos,
                                        counters=cnt)[:, None]
            else:
                q = q.view(B, T, self.H, self.hd).transpose(1, 2)
                k = k.view(B, T, self.KVH, self.hd).transpose(1, 2)
                v = v.view(B, T, self.KVH, self.hd).transpose(1, 2)
                if self.q_norm is not None:
                    q, k = rms_norm(q, self.q_norm[i], self.eps), rms_norm(k, self.k_norm[i], self.eps)
                q = q * cos + _rotate_half(q) * sin
                k = k * cos + _rotate_half(k) * sin
                kc.index_copy_(2, pos, k.to(self.dtype))
                vc.index_copy_(2, pos, v.to(self.dtype))
                a = F.scaled_dot_product_attention(q.to(self.dtype), kc, vc, attn_mask=mask,
                                                   enable_gqa=self.KVH != self.H)
                a = a.transpose(1, 2).reshape(B, T, self.H * self.hd)
            (x,) = grp["attn_out"](a, residual=x)
            (gu,) = grp["mlp_in"](x, rms=(self.ln_post[i], self.eps), split=False)  # [gate | up]
            (x,) = grp["mlp_out"](gu, glu=True, residual=x)
        h = rms_norm(x[:, -1], self.norm, self.eps)
        return F.linear(h, self.lm_head).float()

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.max_len:
            raise ValueError(f"prompt of {T} tokens exceeds max_len {self.max_len}")
        return self.forward(ids.to(self.device), torch.arange(T, device=self.device))

    def capture(self) -> None:
        """Capture one decode step (token buffer, position buffer -> logits) as a CUDA graph."""
        self._tok = torch.zeros(self.batch, 1, dtype=torch.long, device=self.device)
        # warm-up steps really run and write the cache: at the last slot, which a real step overwrites
        # before any query can see it (the mask admits keys <= the query's position)
        self._pos = torch.full((1,), self.max_len - 1, dtype=torch.long, device=self.device)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                self.forward(self._tok, self._pos)
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._logits = self.forward(self._tok, self._pos)

    def step(self, tok: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits for tok [batch, 1] at cache position pos (graph replay on CUDA)."""
        if pos >= self.max_len:
            raise ValueError(f"position {pos} exceeds max_len {self.max_len}")
        if self.device.type != "cuda":
            return self.forward(tok.to(self.device), torch.tensor([pos], device=self.device))
        if self.graph is None:
            self.capture()
        self._tok.copy_(tok)
        self._pos.fill_(pos)
        self.graph.replay()
        return self._logits

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy continuation of ids [batch, T]; returns the new tokens [batch, n]."""
        T = ids.shape[1]
        if T + max_new_tokens > self.max_len:
            raise ValueError(f"{T} + {max_new_tokens} tokens exceed max_len {self.max_len}")
        nxt = self.prefill(ids).argmax(-1, keepdim=True)
        out = [nxt]
        for p in range(T, T + max_new_tokens - 1):
            nxt = self.step(nxt, p).argmax(-1, keepdim=True)
            out.append(nxt)
            if eos_token_id is not None and self.batch == 1 and p % 16 == 0 and (torch.cat(out) == eos_token_id).any():
                break
        new = torch.cat(out, dim=1)
        if eos_token_id is not None and self.batch == 1:
            hit = (new[0] == eos_token_id).nonzero()
            if len(hit):
                new = new[:, : hit[0, 0] + 1]
        return new


def engine_from_ir(ir: QuantizedModel, *, device="cuda", dtype=torch.float16, max_len=1024, batch=1) -> DecoderEngine:
    check_supported(ir.config)
    return DecoderEngine(ir.config, ir.kept, lifted_groups(ir, device), dtype=dtype, device=device,
                         max_len=max_len, batch=batch)
