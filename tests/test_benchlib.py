"""scripts/benchlib.py: benchmark results kept as dated files and a generated table.

Fast tier: no audio, no server. The audio benchmarks cannot run here, so their summaries are
fed results of the shape their ``main`` builds, and saved the way a real run saves them.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCHES = sorted(SCRIPTS.glob("bench_*.py"))


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts import ``benchlib`` from their own folder, as ``python scripts/x.py`` does."""
    monkeypatch.syspath_prepend(str(SCRIPTS))


@pytest.fixture
def benchlib(scripts: None) -> ModuleType:
    return importlib.import_module("benchlib")


def at(text: str) -> object:
    """A run started at this UTC time, on a machine this busy."""
    benchlib = importlib.import_module("benchlib")
    when = datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
    return benchlib.Start(time=when, load=[1.5, 0.5, 0.25])


def run(benchlib: ModuleType, out: Path, started: str, **summary: object) -> Path:
    document = benchlib.record(
        "demo",
        summary=summary,
        results={"figures": summary},
        legend={key: f"what {key} is" for key in summary},
        started=at(started),
        out=out,
        doc="A demonstration,\nin two lines.\n\nNot this paragraph.",
    )
    return benchlib.save(document, out)[0]


def rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| [")]


def test_the_machine_is_described(benchlib: ModuleType) -> None:
    described = benchlib.machine(["numpy", "no-such-package-here"], benchlib.start().load)
    for key in ("cpu", "arch", "cores", "memory_gb", "os", "kernel", "python", "packages"):
        assert described[key], key
    assert described["cores"] >= 1 and described["memory_gb"] > 0
    assert described["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert described["packages"]["no-such-package-here"] is None
    assert "voicechat" in described["packages"]  # always: the code measured
    assert len(described["load_at_start"]) == 3
    json.dumps(described)  # it goes into the file as it is


def test_a_run_is_one_json_file_with_the_command_the_machine_and_every_figure(
    benchlib: ModuleType, tmp_path: Path
) -> None:
    document = benchlib.record(
        "demo",
        summary={"first s": 1.25, "lost": float("nan")},
        results={"runs": [{"first_s": 1.25, "ratio": math.inf}], "note": "as printed"},
        options={"runs": 2, "out": tmp_path, "no_save": False},
        started=at("2026-12-02T10:00:05"),
        out=tmp_path,
    )
    path, table = benchlib.save(document, tmp_path)
    assert path == tmp_path / "demo" / "2026-12-02T100005Z.json"
    assert table == tmp_path / "demo.md"
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["date"] == "2026-12-02T10:00:05+00:00"
    assert saved["command"].startswith("python ")
    assert saved["options"] == {"runs": 2}  # where it was saved is not an option of the bench
    assert saved["summary"] == {"first s": 1.25, "lost": None}  # JSON has no NaN
    assert saved["results"]["runs"] == [{"first_s": 1.25, "ratio": None}]
    assert saved["machine"]["python"] and saved["machine"]["cpu"]
    assert saved["machine"]["load_at_start"] == [1.5, 0.5, 0.25]  # not the run's own load
    assert set(saved) >= {"bench", "script", "git", "duration_s", "argv", "legend"}
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["demo", "demo.md", path.name])


def test_the_command_is_shown_as_typed_from_the_repository(benchlib: ModuleType) -> None:
    argv = [str(SCRIPTS / "bench_demo.py"), "--levels=-12,-6", "--note", "two words"]
    assert (
        benchlib.command_line(argv)
        == "python scripts/bench_demo.py --levels=-12,-6 --note 'two words'"
    )


def test_a_file_is_replaced_whole_or_not_at_all(
    benchlib: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "deep" / "table.md"
    benchlib.write_atomic(target, "old\n")
    assert target.read_text() == "old\n"

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(benchlib.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        benchlib.write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]  # the temp file went


def test_the_table_is_generated_from_every_file_newest_first(
    benchlib: ModuleType, tmp_path: Path
) -> None:
    middle = run(benchlib, tmp_path, "2026-12-02T10:00:00", a=1.0)
    oldest = run(benchlib, tmp_path, "2026-11-30T09:00:00", a=2.0)
    newest = run(benchlib, tmp_path, "2026-12-05T08:00:00", a=0.123456, b=150.4)
    again = run(benchlib, tmp_path, "2026-12-05T08:00:00", a=3.0)  # the same second
    assert again.name == "2026-12-05T080000Z-2.json"
    (tmp_path / "demo" / "notes.json").write_text("{not json")  # skipped, not fatal
    benchlib.write_table(tmp_path, "demo")
    text = (tmp_path / "demo.md").read_text(encoding="utf-8")
    assert text.splitlines()[0] == benchlib.GENERATED
    assert "do not edit it by hand" in text
    assert "# `scripts/bench_demo.py`: A demonstration, in two lines.\n" in text
    links = [row.split("](")[1].split(")")[0] for row in rows(text)]
    assert links == [f"demo/{p.name}" for p in (again, newest, middle, oldest)]
    header = next(line for line in text.splitlines() if line.startswith("| date"))
    assert header.split(" | ")[-2:] == ["a", "b |"]  # every run's columns
    newest_row = rows(text)[1].split(" | ")
    assert newest_row[-2:] == ["0.123", "150 |"]
    assert rows(text)[2].endswith("| 1.00 | — |")  # a column this run did not have
    assert "- **a**: what a is" in text


def test_regenerating_gives_the_same_table(benchlib: ModuleType, tmp_path: Path) -> None:
    run(benchlib, tmp_path, "2026-12-02T10:00:00", a=1.0)
    first = (tmp_path / "demo.md").read_text(encoding="utf-8")
    (tmp_path / "demo.md").write_text("hand-edited")
    benchlib.write_table(tmp_path, "demo")
    assert (tmp_path / "demo.md").read_text(encoding="utf-8") == first


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_is_modified_only_by_changes_outside_the_results(
    benchlib: ModuleType, tmp_path: Path
) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip

    out = tmp_path / "docs" / "benchmarks"
    out.mkdir(parents=True)
    (out / "demo.md").write_text("table\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    state = benchlib.git_state(out, root=tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (out / "demo.md").write_text("a new row\n")  # a benchmark's own output
    assert benchlib.git_state(out, root=tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")  # the code measured differs
    assert benchlib.git_state(out, root=tmp_path)["dirty"] is True


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.stem)
def test_every_bench_saves_through_benchlib(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    assert "benchlib.add_arguments(parser)" in source  # --out and --no-save
    assert "benchlib.finish(" in source


def saved_row(benchlib: ModuleType, tmp_path: Path, bench: str, summary: dict, **fields) -> str:
    """Save as a run of ``bench`` does; its row in the table."""
    document = benchlib.record(bench, summary=summary, out=tmp_path, **fields)
    json_file, table = benchlib.save(document, tmp_path)
    assert json.loads(json_file.read_text(encoding="utf-8"))["bench"] == bench
    [row] = rows(table.read_text(encoding="utf-8"))
    return row


def test_latency_saves_what_it_prints(benchlib: ModuleType, scripts: None, tmp_path: Path) -> None:
    bench = importlib.import_module("bench_latency")
    ours = bench.Result(1.25, 30.1, 0.24, [], 82.4, 0)
    article = bench.Result(3.97, 31.0, 0.48, [], None, 0)
    lost = bench.Result(None, None, 0.0, [], None, 1)
    runs = [
        {"ours": asdict(ours), "article": asdict(article), "ratio": 0.315},
        {"ours": asdict(lost), "article": asdict(article), "ratio": math.nan},
    ]
    results = {"zh": {"characters": 200, "tokens": 150, "text_complete_s": 19.1, "runs": runs,
                      "median_ratio": 0.315}}  # fmt: skip
    summary = bench.summary(results)
    assert summary == {"zh ours s": 1.25, "zh article s": 3.97, "zh ours/article": 0.315,
                       "peak RSS MB": 82.4}  # fmt: skip
    assert set(summary) <= set(bench.LEGEND)
    row = saved_row(benchlib, tmp_path, "latency", summary, results={"languages": results})
    assert row.endswith("| 1.25 | 3.97 | 0.315 | 82.40 |")


def test_embedded_saves_what_it_prints(benchlib: ModuleType, scripts: None, tmp_path: Path) -> None:
    bench = importlib.import_module("bench_embedded")
    medians = {
        "embedded": {"first_token": 4.5, "first_audio": 7.7, "rss_mb": 240.0},
        "http": {"first_token": 1.6, "first_audio": None, "rss_mb": 97.0},
    }
    summary = bench.summary(medians, 198.0)
    assert set(summary) == set(bench.LEGEND)
    row = saved_row(benchlib, tmp_path, "embedded", summary, results={"medians": medians})
    assert row.endswith("| 4.50 | 1.60 | 7.70 | — | 240 | 97.00 | 198 |")


def test_voice_saves_what_it_prints(benchlib: ModuleType, scripts: None, tmp_path: Path) -> None:
    bench = importlib.import_module("bench_voice")
    ours = {"detect": 0.51, "recognize": 0.03, "sent": 0.46, "first_token": 0.5,
            "first_piece": 0.4, "synthesis": 0.4, "first_audio": 1.84, "rss": 362.0,
            "silence_cpu": 2.6, "after_cpu": 4.4}  # fmt: skip
    silence = {**ours, "sent": 0.93, "first_audio": 2.31}
    naive = {"detect": 2.6, "recognize": 3.0, "sent": 5.7, "first_audio": 7.63}
    results = {
        "ours": [ours, {}],
        "silence": [silence],
        "naive": [naive, {**naive, "first_audio": math.nan}],
    }
    turns = {"ours": [1, 1, 1, 2], "silence": [2, 2, 2, 2]}
    summary = bench.summary(results, turns)  # an incomplete run ({}) counts for nothing
    assert summary["ours first audio s"] == 1.84 and summary["naive first audio s"] == 7.63
    assert summary["ours/naive"] == pytest.approx(1.84 / 7.63)
    assert summary["one turn"] == "3/4" and summary["one turn, silence"] == "0/4"
    assert set(summary) == set(bench.LEGEND)
    row = saved_row(benchlib, tmp_path, "voice", summary, results=results)
    assert row.endswith(
        "| 0.460 | 0.930 | 1.84 | 2.31 | 7.63 | 0.241 | 3/4 | 0/4 | 362 | 2.60 | 4.40 |"
    )


def test_bargein_saves_what_it_prints(benchlib: ModuleType, scripts: None, tmp_path: Path) -> None:
    bench = importlib.import_module("bench_bargein")
    measured = [
        {"level": -12.0, "false": 0, "replies": 10, "reactions": [0.11, 0.13, 0.14], "missed": 0,
         "erle": 33.2, "cpu": 0.013},
        {"level": 0.0, "false": 1, "replies": 10, "reactions": [], "missed": 3,
         "erle": math.nan, "cpu": math.nan},
    ]  # fmt: skip
    levels = [bench.level_row(r, trials=3) for r in measured]
    summary, legend = bench.summary(levels)
    assert summary == {
        "echo -12 dB": "0/10 false, 130/140 ms, 0/3 missed, ERLE 33 dB",
        "echo +0 dB": "1/10 false, -, 3/3 missed, ERLE -",
        "canceller CPU %": pytest.approx(1.3),
    }
    assert set(legend) == set(summary)
    row = saved_row(benchlib, tmp_path, "bargein", summary, results={"levels": levels})
    assert row.endswith("| 0/10 false, 130/140 ms, 0/3 missed, ERLE 33 dB | "
                        "1/10 false, -, 3/3 missed, ERLE - | 1.30 |")  # fmt: skip
