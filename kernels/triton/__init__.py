"""Triton kernels (GPU; also run under TRITON_INTERPRET=1 on CPU for tests)."""

import inspect


def _fix_interpreter_index() -> None:
    """Triton 3.6's interpreter (the version on the lent H100 machines) takes a kernel's scalar arguments as
    one-element arrays and converts them with int() when they bound a loop; NumPy 2.4 refuses that
    ("only 0-dimensional arrays can be converted to Python scalars"), so every kernel with a runtime loop
    bound failed under TRITON_INTERPRET=1 there (87 of the kernel and runtime tests). Newer Triton squeezes
    the array first (3.9 does); where the installed interpreter still has the old conversion, do the same.
    Nothing changes for compiled kernels."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    orig = getattr(interpreter, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "liftexport_fixed", False):
        return
    try:
        if "int(self.handle.data)" not in inspect.getsource(orig):
            return
    except (OSError, TypeError):
        return

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched.liftexport_fixed = True
    interpreter._patch_lang_tensor = patched


_fix_interpreter_index()
