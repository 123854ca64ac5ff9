"""Time end-to-end `liftexport model` runs on the example model and evaluate what they wrote.

    python bench/cli_runs.py --eval-text persuasion.txt --out runs.json \
        --run s24="--bits 2.4" --run t24="--bits 2.4 --calib-text emma.txt ..." [--src MODEL]

Each run is the user's command (`liftexport model SRC ARGS -o WORKDIR/NAME.lqt --report ...`) in a
child process: wall time, the child's peak RSS (polled process-tree RSS), then `liftexport eval` and
`liftexport inspect` of the written file. Prints a table; writes JSON after every run, so a run cut
off by a time limit keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "liftexport.cli", *args]


def run_timed(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """Run cmd, polling the tree's RSS every 0.2 s; returns (wall s, peak RSS GiB, exit code)."""
    t0 = time.perf_counter()
    peak = 0
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.2)
    return time.perf_counter() - t0, peak / 2**30, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None, help="model source (default: the example model)")
    ap.add_argument("--eval-text", nargs="+", required=True)
    ap.add_argument("--run", action="append", required=True, help='NAME="extra liftexport model args"')
    ap.add_argument("--workdir", default="/tmp/lq_cli_runs")
    ap.add_argument("--out", default="bench/cli_runs.json")
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in a.run:
        name, _, extra = spec.partition("=")
        art = wd / f"{name}.lqt"
        report = wd / f"{name}.report.json"
        cmd = _cli("model", *([a.src] if a.src else []), *shlex.split(extra), "-o", str(art),
                   "--report", str(report), "--no-resume")
        wall, rss, rc = run_timed(cmd, wd / f"{name}.log")
        row = {"run": name, "args": extra, "rc": rc, "wall_seconds": round(wall, 1), "peak_rss_gib": round(rss, 2)}
        if rc == 0:
            summary = json.loads(report.read_text())["summary"]
            row.update(config=summary.get("config"), quantize_seconds=summary.get("quantize_seconds"),
                       calibration=summary.get("calibration"), correction_steps=summary.get("correction_steps"),
                       file_bytes=summary.get("bytes"),
                       distill_seconds=(summary.get("distill") or {}).get("seconds"))
            Path(a.out).write_text(json.dumps(rows + [row], indent=1))  # kept if eval is cut off
            t_eval = time.perf_counter()
            ev = subprocess.run(_cli("eval", str(art), "--json", *sum((["--text", t] for t in a.eval_text), [])),
                                capture_output=True, text=True)
            if ev.returncode == 0:
                row["ppl"] = round(json.loads(ev.stdout.strip().splitlines()[-1])["ppl"], 3)
            row["eval_seconds"] = round(time.perf_counter() - t_eval, 1)
            ins = subprocess.run(_cli("inspect", str(art), "--json"), capture_output=True, text=True)
            if ins.returncode == 0:
                info = json.loads(ins.stdout)
                row.update(effective_bits=info["effective_bits"], file_bytes=info["file_bytes"])
        else:
            row["log_tail"] = (wd / f"{name}.log").read_text()[-2000:]
        rows.append(row)
        Path(a.out).write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)
    print(f"\n{'run':<10} {'config':<7} {'wall s':>8} {'quant s':>8} {'RSS GiB':>8} {'eff bits':>9} {'PPL':>10}")
    for r in rows:
        print(f"{r['run']:<10} {str(r.get('config')):<7} {r['wall_seconds']:>8} {str(r.get('quantize_seconds')):>8} "
              f"{r['peak_rss_gib']:>8} {str(r.get('effective_bits')):>9} {str(r.get('ppl')):>10}")


if __name__ == "__main__":
    main()
