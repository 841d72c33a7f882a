"""The documentation: the pages generated from the code and the measurements are current,
the site builds with ``mkdocs build --strict`` (a broken link or a missing page fails), and
README stays a short front page that opens with the set-up, main-job and test commands."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generator_module():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_pages_are_current():
    stale = generator_module().stale()
    assert not stale, f"out of date: {[str(p.relative_to(ROOT)) for p in stale]}; run python docs/generate.py"


def test_the_check_sees_a_stale_page(tmp_path, monkeypatch):
    generate = generator_module()
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    start, end = text.index(generate.HEADLINE_START), text.index(generate.HEADLINE_END)
    readme.write_text(text[:start] + generate.HEADLINE_START + "\n| an old table |\n" + text[end:])
    monkeypatch.setattr(generate, "README", readme)
    monkeypatch.setattr(generate, "CONFIGURATION", ROOT / "docs" / "configuration.md")
    assert generate.stale() == [readme]


def test_every_config_field_of_every_command_is_in_the_reference():
    from gencond.config import field_reference

    page = (ROOT / "docs" / "configuration.md").read_text()
    for _, _, cls in generator_module().config_sections():
        assert f"## {cls.__name__}" in page
        assert all(f"| `{row['key']}` |" in page for row in field_reference(cls))


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, check=False,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "site" / "quickstart" / "index.html").is_file()
    assert "ConditionalGenerator" in (tmp_path / "site" / "api" / "index.html").read_text()


def test_readme_is_a_short_front_page_opening_with_the_three_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    opening = "\n".join(lines[:6])
    for command in ('pip install -e ".[dev]"', "gencond train dim --config configs/dim/digits.yaml",
                    "python -m pytest -q -n 2"):
        assert command in opening
    assert not any("issue " in line.lower() for line in lines)


def test_a_leaderboard_page_ranks_by_lrs_within_each_inpc_and_label_type(tmp_path, monkeypatch):
    import json

    def record(name, ipc, accuracy, labels="hard"):
        return {"training_set": name, "ipc": ipc, "arch": "convnet3", "labels": labels, "augment": "",
                "accuracies": [accuracy], "train_seconds": [1.0]}

    report = {"dataset": {"name": "digits"}, "train_split": 1347, "test_split": 450,
              "machine": {"device_name": "cpu", "cpu_threads": 2, "torch": "2", "gencond": "0"},
              "args": {"arch": ["convnet3"], "augment": ["dsa"], "seeds": 1,
                       "train": {"epochs": 300, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 256,
                                 "schedule": "step"}},
              "results": [record("full", None, 98.0), record("random", 1, 70.0),
                          {**record("A", 1, 80.0), "best_accuracies": [82.5]},
                          record("B", 1, 90.0), record("random", 1, 75.0, "soft"), record("A", 1, 95.0, "soft")]}
    (tmp_path / "bench.json").write_text(json.dumps(report))
    generate = generator_module()
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    page, series = generate.leaderboard_page({"id": "d", "title": "digits", "json": "bench.json", "rows": [
        {"name": "random real images", "set": "random"}, {"name": "A", "set": "A"}, {"name": "B", "set": "B"}]})
    hard = page[page.index("### hard labels"):page.index("### soft labels")]
    # B: IOR +20, HLR +8 -> alpha 0.06, LRS 29.53; A: IOR +10, HLR +18 -> alpha -0.04, LRS 25.23
    assert hard.index("| 1 | B | 90.00 | +20.00 | +8.00 | 29.53 |") < hard.index("| 1 | A | 80.00 | +10.00 | +18.00 | 25.23 |")
    soft = page[page.index("### soft labels"):]
    assert "| 1 | A | 95.00 | +20.00 | +18.00 | 27.32 |" in soft  # soft IOR, the hard-label HLR: alpha 0.01
    assert "| B |" not in soft and "The whole training split: 98.00" in page
    assert series[1] == ("A", [(1, 80.0, 0.0)])
    assert "| A | 80.00 ± 0.00 (82.50) |" in page and "chosen on the test split" in page  # best: an aside only
