"""liftexport: a compiler that quantizes decoder LLMs with LiftQuant and exports them.

Data flows one way: load -> calibrate -> quantize -> IR -> emit -> run.
"""

__version__ = "0.1.0"
