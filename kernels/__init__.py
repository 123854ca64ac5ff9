"""Compute kernels: native CPU code (cpu/, loaded with ctypes) and Triton kernels (triton/)."""
