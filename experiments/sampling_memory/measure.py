"""Peak memory of ``gencond sample`` against INPC: each request runs in a fresh process
(its own peak RSS, from ``os.wait4``), writing to a temporary folder that is deleted after;
the seconds and images/s come from the same run.

    python -m experiments.sampling_memory.measure --json experiments/sampling_memory/sampling_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gencond.runtime import cpu_description

ROOT = Path(__file__).resolve().parents[2]


def measure(checkpoint: str, inpc: int, fmt: str, shard_size: int | None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="gencond-sample-"))
    cmd = [sys.executable, "-m", "gencond", "sample", "--checkpoint", checkpoint, "--inpc", str(inpc), "--format", fmt,
           "--out", str(out / "set")] + (["--shard-size", str(shard_size)] if shard_size else [])
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        log.seek(0)
        text = log.read().decode(errors="replace")
    written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    shutil.rmtree(out)
    if child.returncode != 0:
        raise SystemExit(text)
    images = inpc * 10
    return {"checkpoint": checkpoint, "inpc": inpc, "images": images, "format": fmt, "shard_size": shard_size or 50_000,
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss: KiB on Linux
            "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1), "bytes_written": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inpc", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    requests = [("checkpoints/dim_digits", "safetensors", None), ("checkpoints/dim_digits", "safetensors", 5000),
                ("checkpoints/dim_digits", "png", None), ("checkpoints/codebook_digits", "safetensors", None)]
    for checkpoint, fmt, shard in requests:
        for inpc in args.inpc:
            rows.append(measure(checkpoint, inpc, fmt, shard))
            print(json.dumps(rows[-1]), flush=True)
    report = {"machine": cpu_description(), "threads": os.cpu_count(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
