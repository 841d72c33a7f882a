"""The reporting helper of the benchmark scripts: one JSON layout (benchmark name,
arguments, machine, results, wall time), the machine description and the results table."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from gencond.artifacts import write_json
from gencond.evaluate.protocol import format_table, machine_description

__all__ = ["BenchmarkReport", "format_table", "machine_description"]


class BenchmarkReport:
    """Collects a benchmark's sections and writes them as one JSON file."""

    def __init__(self, benchmark: str, args: dict, device: torch.device):
        self.start = time.perf_counter()
        self.data = {"benchmark": benchmark, "args": args, "machine": machine_description(device)}

    def add(self, **sections) -> None:
        self.data.update(sections)

    def write(self, path: str | Path) -> dict:
        self.data["wall_seconds"] = round(time.perf_counter() - self.start, 1)
        machine = self.data["machine"]
        print(f"\nwall time {self.data['wall_seconds']:.0f} s on {machine['device_name']} ({machine['device']}), "
              f"{machine['cpu_threads']} thread(s)")
        write_json(path, self.data)
        print(f"results written to {path}")
        return self.data
