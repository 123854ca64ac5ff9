"""Long fuzz run of the container reader (outside CI): N hostile files, every one must raise FormatError.

    .venv/bin/python bench/fuzz_container.py --cases 100000 [--seed 1]

Uses the same generator as tests/formats/test_container_fuzz.py (byte flips, truncation, splices,
header and layout mutations of spec/vectors/tiny_model.lqt). Prints counts by error message prefix.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "formats"))
from test_container_fuzz import hostile  # noqa: E402

from liftexport.errors import FormatError  # noqa: E402
from liftexport.formats.container import read_container  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    counts: collections.Counter = collections.Counter()
    d = Path(tempfile.mkdtemp())
    t0 = time.time()

    @settings(max_examples=a.cases, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(data=hostile())
    def run(data):
        p = d / "f.lqt"
        p.write_bytes(data)
        try:
            read_container(p)
            counts["loaded (valid)"] += 1
        except FormatError as e:
            msg = str(e).split(": ", 1)[-1]
            counts[msg.split(" ", 3)[0] + " " + msg.split(" ", 3)[1] if " " in msg else msg] += 1

    import random

    random.seed(a.seed)
    run()
    total = sum(counts.values())
    print(f"{total} cases in {time.time() - t0:.0f}s; all ended in FormatError or a valid load")
    for k, v in counts.most_common(15):
        print(f"{v:>8}  {k}")


if __name__ == "__main__":
    main()
