"""Compute kernels: native CPU code (cpu/, loaded with ctypes), Triton kernels (triton/) and the CUDA
decode kernels of cuda/ (loaded with ctypes by cuda_binary.py)."""
