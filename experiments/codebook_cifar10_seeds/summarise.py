"""Pool the bench's per-training rows into one row per config: the mean over every network
(trainings x evaluation seeds), and the std over the trainings' means (how much the figure
moves from one training run to the next). Random and herding rows are copied unchanged.

    python -m experiments.codebook_cifar10_seeds.summarise
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROW = re.compile(r"codebook-(?P<variant>\w+)-s(?P<seed>\d+)( \(fixed\))?$")


def summarise(report: dict) -> dict:
    pooled: dict[tuple[str, int], dict[int, list[float]]] = {}
    rows = []
    for r in report["results"]:
        found = ROW.match(r["training_set"])
        if found is None:
            rows.append(r)
            continue
        pooled.setdefault((found["variant"], r["ipc"]), {})[int(found["seed"])] = r["accuracies"]
    for (variant, ipc), per_training in sorted(pooled.items()):
        means = [float(np.mean(v)) for _, v in sorted(per_training.items())]
        every = [a for _, v in sorted(per_training.items()) for a in v]
        rows.append({"training_set": f"codebook, {variant} ({len(means)} trainings)", "ipc": ipc, "arch": "convnet3",
                     "labels": "hard", "mean": round(float(np.mean(every)), 3), "std": round(float(np.std(means)), 3),
                     "accuracies": every, "per_training_mean": [round(m, 3) for m in means],
                     "training_seeds": sorted(per_training)})
    return {"source": "bench_codebook_cifar10_seeds.json", "std_is": "population std of the training runs' means",
            "machine": report["machine"], "results": rows}


def main() -> None:
    report = json.loads((HERE / "bench_codebook_cifar10_seeds.json").read_text())
    summary = summarise(report)
    (HERE / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in summary["results"]:
        extra = f"  per training {r['per_training_mean']}" if "per_training_mean" in r else ""
        print(f"{r['training_set']:<34} INPC {r['ipc']:>2}: {r['mean']:6.2f} ± {r['std']:.2f}{extra}")


if __name__ == "__main__":
    main()
