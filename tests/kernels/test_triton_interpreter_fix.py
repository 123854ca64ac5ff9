"""kernels/triton/__init__.py: the loop-bound fix for Triton 3.6's interpreter under NumPy >= 2.4.

CI's Triton already squeezes, so the fix is exercised here on a stand-in of the old interpreter
function (the same source line), and the real interpreter is checked to run a runtime-bounded loop."""

import numpy as np
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter

from liftexport.kernels import triton as kt


class _Scope:
    def __init__(self):
        self.changes = []

    def set_attr(self, obj, name, value):
        self.changes.append((obj, name, getattr(obj, name, None)))
        setattr(obj, name, value)


def _old_patch_lang_tensor(tensor, scope):  # Triton 3.6's conversion, verbatim in the line that matters
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))


class _Handle:
    def __init__(self, data):
        self.data = data


class _Tensor:
    def __init__(self, data):
        self.handle = _Handle(data)


def test_fix_replaces_the_old_conversion_only(monkeypatch):
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", _old_patch_lang_tensor)
    kt._fix_interpreter_index()
    fixed = interpreter._patch_lang_tensor
    assert fixed is not _old_patch_lang_tensor and fixed.liftexport_fixed
    kt._fix_interpreter_index()  # idempotent
    assert interpreter._patch_lang_tensor is fixed
    scope = _Scope()
    fixed(_Tensor, scope)
    assert range(_Tensor(np.array([5], dtype=np.int32)))[-1] == 4  # a one-element array bounds a loop

    def newer(tensor, scope):  # an interpreter that already squeezes is left alone
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", newer)
    kt._fix_interpreter_index()
    assert interpreter._patch_lang_tensor is newer


@triton.jit
def _count_kernel(out_ptr, n, BLOCK: tl.constexpr):
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i0 in range(0, n, BLOCK):
        acc += 1.0
    tl.store(out_ptr + tl.arange(0, BLOCK), acc)


def test_runtime_loop_bound_runs_under_the_interpreter():
    out = torch.zeros(16)
    _count_kernel[(1,)](out, 50, BLOCK=16)
    assert torch.equal(out, torch.full((16,), 4.0))
