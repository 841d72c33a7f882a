"""Write the pages that are made from the code and the measurements, not by hand:

- ``docs/configuration.md``: every config field of every command, from the dataclasses'
  ``help`` metadata (so the reference cannot drift from the code);
- ``docs/results.md``: the current numbers, read from the JSON files under ``experiments/``
  through ``experiments/results.yaml``, and an index of the studies;
- README's headline table (between its ``results:headline`` markers), from the same data;
- ``docs/leaderboards/<id>.md`` and its plot: one page per benchmarked dataset, every set's
  accuracy against INPC and DD-Ranking's scores, from a ``gencond bench`` JSON named in the
  manifest's ``leaderboards``.

    python docs/generate.py            # rewrite them
    python docs/generate.py --check    # exit 1, naming each one that is out of date (the tests run this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION, RESULTS, README = ROOT / "docs" / "configuration.md", ROOT / "docs" / "results.md", ROOT / "README.md"
LEADERBOARDS = ROOT / "docs" / "leaderboards"
MANIFEST = ROOT / "experiments" / "results.yaml"
HEADLINE_START, HEADLINE_END = "<!-- results:headline -->", "<!-- /results:headline -->"


# --- the configuration reference ---


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(value) -> str:
    return "`" + (json.dumps(value) if isinstance(value, (list, str)) and value != "" else
                  "''" if value == "" else str(value).lower() if isinstance(value, bool) else str(value)) + "`"


def config_sections() -> list[tuple[str, str, type]]:
    """(heading, what runs it, config class) for every command's config: one per method
    config (methods sharing a config share a section), then eval, bench and sweep."""
    from gencond.evaluate import EvalConfig
    from gencond.evaluate.bench import BenchConfig
    from gencond.methods import get_method, list_methods
    from gencond.methods.sweep import SweepConfig

    by_config: dict[type, list[str]] = {}
    for name in list_methods():
        by_config.setdefault(get_method(name).config, []).append(name)
    sections = []
    for cls, names in by_config.items():
        kind = get_method(names[0]).kind
        verb = "train" if kind == "generator" else "condense"
        runs = ", ".join(f"`gencond {verb} {n}`" for n in names)
        sections.append((f"{cls.__name__} ({', '.join(names)})", runs, cls))
    sections.append(("EvalConfig", "`gencond eval`", EvalConfig))
    sections.append(("BenchConfig", "`gencond bench`", BenchConfig))
    sections.append(("SweepConfig", "`gencond sweep METHOD` (its own options; `config` names the method's config)",
                     SweepConfig))
    return sections


def configuration_page() -> str:
    from gencond.config import field_reference

    lines = ["# Configuration reference", "",
             "Generated from the config dataclasses by `python docs/generate.py`; do not edit by hand.",
             "",
             "Every command reads its settings from a dataclass: the defaults below, then the YAML file given with",
             "`--config`, then flags. A YAML key is the field's name (a nested field is a mapping: `train: {epochs: 300}`);",
             "its flag is `--name` with dashes, or `--parent.name` for a nested field (also `--name` where no other",
             "field has that name). A renamed field's old key or flag is refused with one line naming the new one.",
             ""]
    for heading, runs, cls in config_sections():
        lines += [f"## {heading}", "", f"Used by {runs}." + (f" {cls.__doc__.split(chr(10))[0]}" if cls.__doc__ else ""),
                  "", "| key | flag | type | default | what it sets |", "| --- | --- | --- | --- | --- |"]
        for row in field_reference(cls):
            lines.append(f"| `{row['key']}` | `{row['flags'][-1]}` | {row['type']} | {_default(row['default'])} | "
                         f"{_cell(row['help'])} |")
        lines.append("")
    return "\n".join(lines)


# --- the results ---


def _load_json(path: str, cache: dict) -> dict:
    if path not in cache:
        cache[path] = json.loads((ROOT / path).read_text())
    return cache[path]


def find_row(files: list[str], training_set: str, inpc: int, labels: str, cache: dict) -> tuple[dict, str]:
    """The ConvNet-3 (DSA) record of ``training_set`` at ``inpc`` with ``labels`` in the first of
    ``files`` that has it, and that file."""
    for path in files:
        for r in _load_json(path, cache).get("results", []):
            if (r.get("training_set") == training_set and r.get("ipc") == inpc and r.get("arch", "convnet3") == "convnet3"
                    and (r.get("labels") or "hard") == labels and r.get("augment", "") in ("", "dsa")):
                return r, path
    raise LookupError(f"no {training_set!r} at {inpc} ({labels} labels) in {', '.join(files)}")


def render_table(table: dict, cache: dict, notes: list[str]) -> str:
    """One manifest table as markdown; footnotes go to ``notes``, sources to its last column."""
    header = ["training set"] + [c["label"] for c in table["columns"]] + ["study"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in table["rows"]:
        cells, used = [], []
        for column in table["columns"]:
            files = row_files(row, table, column["source"])
            name = row.get(column["source"])
            if name is None:
                cells.append("–")
                continue
            try:
                record, path = find_row(files, name, column["inpc"], column.get("labels", "hard"), cache)
            except LookupError:
                if not row.get("partial"):  # only a row marked partial may lack a cell
                    raise
                cells.append("–")
                continue
            cells.append(f"{record['mean']:.2f} ± {record['std']:.2f}")
            used.append(path)
        label = row["name"]
        if "note" in row:
            notes.append(row["note"])
            label += f" [^{len(notes)}]"
        sources = ", ".join(f"`{study}`" for study in dict.fromkeys(Path(p).parent.name for p in used))
        lines.append("| " + " | ".join([label, *cells, sources]) + " |")
    return "\n".join(lines)


def row_files(row: dict, table: dict, source: str) -> list[str]:
    """The JSON files a row's cell of ``source`` is read from: the row's own (one file, or one
    per source) where it names one, else the table's sources."""
    own = row.get("json")
    if isinstance(own, dict):
        own = own.get(source)
    return [own] if own else table["sources"][source]


def manifest() -> dict:
    from gencond.config import parse_yaml

    return parse_yaml(MANIFEST.read_text())


def study_index() -> list[str]:
    lines = ["| study | what it measured |", "| --- | --- |"]
    for readme in sorted((ROOT / "experiments").glob("*/README.md")):
        title = next((line[2:].strip() for line in readme.read_text().splitlines() if line.startswith("# ")), "")
        lines.append(f"| `experiments/{readme.parent.name}/` | {_cell(title)} |")
    return lines


def results_page() -> str:
    cache: dict = {}
    lines = ["# Results", "",
             "Generated by `python docs/generate.py` from the JSON files under `experiments/`, through",
             "`experiments/results.yaml` (which rows are current); do not edit by hand. Each study's folder",
             "holds its command, data, machine, wall time and reading. Final test accuracy (%), mean ± std over",
             "evaluation seeds; no epoch, checkpoint or setting was chosen on the test split.", ""]
    for table in manifest()["tables"]:
        notes: list[str] = []
        lines += [f"## {table['title']}", "", table["protocol"], "", render_table(table, cache, notes), ""]
        if table.get("reading"):
            lines += [table["reading"], ""]
        lines += [f"[^{i}]: {note}" for i, note in enumerate(notes, 1)] + ([""] if notes else [])
    boards = manifest().get("leaderboards", [])
    if boards:
        lines += ["## Leaderboards", "", "Every method from INPC 1 to 50 under one recipe, with DD-Ranking's scores:", "",
                  *[f"- [{board['title']}](leaderboards/{board['id']}.md)" for board in boards], ""]
    lines += ["## The studies", "", *study_index(), ""]
    return "\n".join(lines)


# --- the leaderboards ---


def bench_results(report: dict) -> list:
    """A bench JSON's records as the bench's own RowResults (so its metrics are computed by
    the library's code, also for files written before a metric existed)."""
    from gencond.evaluate.protocol import RowResult

    return [RowResult(r["training_set"], r["ipc"], r["arch"], r["accuracies"], r["train_seconds"],
                      labels=r.get("labels") or "hard", augment=r.get("augment", ""), best=r.get("best_accuracies"))
            for r in report["results"]]


def recipe_line(report: dict) -> str:
    args, train, machine = report["args"], report["args"]["train"], report["machine"]
    augment = "/".join(args["augment"])
    full = f" (the whole training split, for HLR: {args['full_data_epochs']} epochs)" if args.get("full_data_epochs") else ""
    return (f"{report['dataset']['name']}: {report['train_split']:,} training / {report['test_split']:,} test images. "
            f"Recipe: {', '.join(args['arch'])}, trained {train['epochs']} epochs from scratch on each set (SGD lr "
            f"{train['lr']}, momentum {train['momentum']}, weight decay {train['weight_decay']}, batch "
            f"{train['batch_size']}, {train['schedule']} schedule){full}, augmentation {augment}, {args['seeds']} seeds; "
            f"the **final** test accuracy (%), mean ± std over seeds. Machine: {machine['device_name']} "
            f"({machine['cpu_threads']} threads), torch {machine['torch']}, gencond {machine['gencond']}.")


def leaderboard_page(board: dict) -> tuple[str, list]:
    """The page of one manifest leaderboard, and the series its plot draws."""
    from gencond.evaluate.bench import improvement_metrics

    report = json.loads((ROOT / board["json"]).read_text())
    results = bench_results(report)
    metrics = improvement_metrics(results)
    arch, augment = report["args"]["arch"][0], report["args"]["augment"][0]
    with_augment = len(report["args"]["augment"]) > 1
    inpcs = sorted({r.ipc for r in results if r.ipc is not None})
    lines = [f"# Leaderboard: {board['title']}", "",
             f"Generated by `python docs/generate.py` from `{board['json']}` (study: `{Path(board['json']).parent}/`, "
             "with its command and wall time); do not edit by hand.", "", recipe_line(report), "",
             "![accuracy against images per class](" + f"{board['id']}.png)", ""]
    series = []
    def pick(name: str, ipc: int, labels: str):
        return next((r for r in results if r.name == name and r.ipc == ipc and r.arch == arch and r.labels == labels
                     and r.augment in ("", augment)), None)

    for labels in dict.fromkeys(r.labels for r in results):
        header = ["training set"] + [f"INPC {n}" for n in inpcs]
        lines += [f"## Accuracy, {labels} labels ({arch}, {augment})", "", "| " + " | ".join(header) + " |",
                  "|" + " --- |" * len(header)]
        for row in board["rows"]:
            found = [pick(row["set"], n, labels) for n in inpcs]
            lines.append("| " + " | ".join([row["name"]] + [accuracy_cell(r) for r in found]) + " |")
            if labels == "hard":
                series.append((row["name"], [(n, r.mean, r.std) for n, r in zip(inpcs, found) if r]))
        full = next((r for r in results if r.ipc is None and r.arch == arch and r.augment in ("", augment)), None)
        if full is not None and labels == "hard":
            lines += ["", f"The whole training split: {accuracy_cell(full)}."]
        if any(r.best for r in results):
            lines += ["", "In brackets: the best test accuracy over training (`--best-every`), chosen on the test "
                          "split as DC-BENCH and DD-Ranking report it; never ranked."]
        lines.append("")
    lines += ["## DD-Ranking scores", "",
              "IOR: accuracy minus random real images' at the same INPC, same labels; HLR: the whole training "
              "split's hard-label accuracy minus the set's; LRS = 100 (e^a - e^-1) / (e - e^-1), a = (IOR - HLR) / 200; "
              "ARS likewise from b = (IOR with augmentation + IOR without) / 200 (see the evaluation page). "
              "Ranked by LRS (by accuracy where LRS is missing) within each INPC and label type: hard and soft labels are "
              "never ranked together.", ""]
    for labels in dict.fromkeys(r.labels for r in results):
        column = ", ".join([arch] + ([augment] if with_augment else []) + ([f"{labels} labels"] if labels != "hard" else []))
        header = ["INPC", "training set", "accuracy", "IOR", "HLR", "LRS", "ARS"]
        lines += [f"### {labels} labels", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for n in inpcs:
            ranked = []
            for row in board["rows"]:
                m = metrics.get((row["set"], n, column))
                r = next((r for r in results if r.name == row["set"] and r.ipc == n and r.column == column), None)
                if r is not None:
                    ranked.append(((m.get("lrs", float("-inf")), r.mean), row["name"], r, m))
            for _, name, r, m in sorted(ranked, key=lambda t: t[0], reverse=True):
                cells = [f"{m[k]:{sign}.2f}" if k in m else "–" for k, sign in (("ior", "+"), ("hlr", "+"), ("lrs", ""),
                                                                                 ("ars", ""))]
                lines.append(f"| {n} | {name} | {r.mean:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    if board.get("reading"):
        lines += ["## Reading", "", board["reading"], ""]
    return "\n".join(lines), series


def accuracy_cell(r) -> str:
    """Final accuracy, mean ± std, with the best over training in brackets where measured."""
    if r is None:
        return "–"
    best = f" ({r.best_mean:.2f})" if r.best else ""
    return f"{r.mean:.2f} ± {r.std:.2f}{best}"


def leaderboard_plot(series: list, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in series:
        if points:
            ax.errorbar([p[0] for p in points], [p[1] for p in points], [p[2] for p in points], marker="o", capsize=3,
                        label=name)
    ax.set(xscale="log", xlabel="images per class (INPC)", ylabel="final test accuracy (%)", title=title)
    ticks = sorted({p[0] for _, points in series for p in points})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def leaderboards() -> list[tuple[dict, str, list]]:
    return [(board, *leaderboard_page(board)) for board in manifest().get("leaderboards", [])]


def headline_block() -> str:
    """README's headline table: the manifest's ``headline`` table, notes as plain lines."""
    table = next(t for t in manifest()["tables"] if t["id"] == "headline")
    notes: list[str] = []
    body = render_table(table, {}, notes).replace(" [^", " [").replace("] |", "] |")
    text = [HEADLINE_START, body, ""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)] + [HEADLINE_END]
    return "\n".join(text)


def readme_with_headline(readme: str) -> str:
    start, end = readme.index(HEADLINE_START), readme.index(HEADLINE_END) + len(HEADLINE_END)
    return readme[:start] + headline_block() + readme[end:]


def pages() -> dict[Path, str]:
    return {CONFIGURATION: configuration_page() + "\n", RESULTS: results_page(),
            README: readme_with_headline(README.read_text()),
            **{LEADERBOARDS / f"{board['id']}.md": text for board, text, _ in leaderboards()}}


def plots() -> list[Path]:
    return [LEADERBOARDS / f"{board['id']}.png" for board in manifest().get("leaderboards", [])]


def stale() -> list[Path]:
    """The generated pages whose text differs from what the code and the JSON files give now."""
    return [path for path, text in pages().items() if not path.is_file() or path.read_text() != text] + \
        [path for path in plots() if not path.is_file()]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{path.relative_to(ROOT)} is out of date: run python docs/generate.py", file=sys.stderr)
        return 1 if out_of_date else 0
    if argv:
        print("usage: python docs/generate.py [--check]", file=sys.stderr)
        return 2
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    for board, _, series in leaderboards():
        path = LEADERBOARDS / f"{board['id']}.png"
        leaderboard_plot(series, board["title"], path)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
