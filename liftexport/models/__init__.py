"""Model loading (HF dir, GGUF, the embedded default) and per-family adapters."""
