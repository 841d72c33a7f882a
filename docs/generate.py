"""Write the pages that are made from the code and the measurements, not by hand:

- ``docs/configuration.md``: every config field of every command, from the dataclasses'
  ``help`` metadata (so the reference cannot drift from the code);
- ``docs/results.md``: the current numbers, read from the JSON files under ``experiments/``
  through ``experiments/results.yaml``, and an index of the studies;
- README's headline table (between its ``results:headline`` markers), from the same data.

    python docs/generate.py            # rewrite them
    python docs/generate.py --check    # exit 1, naming each one that is out of date (the tests run this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION, RESULTS, README = ROOT / "docs" / "configuration.md", ROOT / "docs" / "results.md", ROOT / "README.md"
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
            files = [row["json"]] if "json" in row else table["sources"][column["source"]]
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
    lines += ["## The studies", "", *study_index(), ""]
    return "\n".join(lines)


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
            README: readme_with_headline(README.read_text())}


def stale() -> list[Path]:
    """The generated pages whose text differs from what the code and the JSON files give now."""
    return [path for path, text in pages().items() if not path.is_file() or path.read_text() != text]


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
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
