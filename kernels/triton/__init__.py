"""Triton kernels (GPU; also run under TRITON_INTERPRET=1 on CPU for tests)."""
