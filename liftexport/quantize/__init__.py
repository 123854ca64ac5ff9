"""Quantization: whitening + lifted search (lift.py), block-wise correction (correct.py),
integer baselines (rtn.py), and the block-by-block pipeline that produces the IR (pipeline.py)."""
