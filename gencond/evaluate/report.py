"""The JSON layout every benchmark writes (``gencond bench``, ``gencond sweep`` and the
experiment drivers): benchmark name, arguments, machine, the benchmark's sections, wall time."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from gencond.evaluate.protocol import machine_description
from gencond.files import write_json


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
              f"{machine['cpu_threads']} thread(s); CPU flags: {' '.join(machine['cpu_flags']) or 'none listed'}")
        write_json(path, self.data)
        print(f"results written to {path}")
        return self.data
