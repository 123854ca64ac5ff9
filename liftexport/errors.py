"""One exception type per layer of the system; the CLI turns each into a one-line message, exit 2."""


class LiftExportError(Exception):
    """Base class of every error liftexport raises on purpose (bad input, not a bug)."""


class ConfigError(LiftExportError):
    """A user-facing option is out of range or malformed (bits, budget, config string)."""


class LatticeError(LiftExportError):
    """A lattice file is missing, corrupt, or of an unsupported version."""


class UnsupportedModelError(LiftExportError):
    """The model's architecture or layout is not one liftexport can quantize."""


class FormatError(LiftExportError):
    """An artifact (container, ONNX, GGUF) is malformed, truncated, or of an unsupported version."""
