"""Docs that stay true: every runnable code block in README.md and docs/*.md runs, and the pages
that describe the code (docs/architecture.md, the README's layout, benchmarks/RESULTS.md) name
only what exists.

Python blocks run in a subprocess, shell blocks (bash/sh) under `bash -e`, both in a sandbox
folder that stands in for a user's working folder: `pretrained_models/` is a tiny random
pretrained folder (`init-pretrained --tiny`), `ref.wav` and `alice_interview.wav` are voice-like
synthetic clips, and `.venv/bin/voicefleet` / `.venv/bin/python` run this checkout. A block that
needs real weights, a cluster, a server or a long run carries a marker on the line before it,
`<!-- not run: reason -->`; it is reported as skipped with that reason. yaml and json blocks are
parsed (and validated where they are a Serve config or a sweep space); plain text is left alone.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src" / "voicefleet"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MARKER = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)")
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    not_run: str | None  # the marker's reason, when the block carries one

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO).as_posix()}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """Every fenced block of a markdown page, with the `not run` marker of the line before it."""
    lines = page.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.name}:{i + 1}: code block never closed")
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        code = "\n".join(line[len(indent):] for line in lines[i + 1:end]) + "\n"
        blocks.append(Block(page, i + 1, lang.lower(), code, marker.group(1) if marker else None))
        i = end + 1
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in code_blocks(page)]
RUN_BLOCKS = [block for block in ALL_BLOCKS if block.lang in RUNNABLE]


def test_markers_sit_on_runnable_blocks_and_give_a_reason():
    """A marker that does not precede a runnable block would silently mark nothing."""
    problems = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        marked = {b.line for b in code_blocks(page) if b.not_run is not None and b.lang in RUNNABLE}
        for number, line in enumerate(lines, 1):
            if not line.strip().startswith("<!-- not run"):
                continue
            match = MARKER.match(line.strip())
            following = next((k for k in range(number, len(lines)) if lines[k].strip()), None)
            if not match or not match.group(1):
                problems.append(f"{page.name}:{number}: write the marker as <!-- not run: reason -->")
            elif following is None or following + 1 not in marked:
                problems.append(f"{page.name}:{number}: marker not followed by a python or bash block")
    assert not problems, "\n".join(problems)


def test_the_block_finder_sees_the_docs():
    """Guard against a parser that finds nothing and so runs nothing."""
    assert any(b.page.name == "README.md" and b.lang == "python" for b in RUN_BLOCKS)
    assert sum(b.not_run is None for b in RUN_BLOCKS) >= 4


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A working folder with tiny pretrained weights, reference audio and the voicefleet command."""
    import soundfile as sf

    from voicefleet.models.pretrained import init_pretrained
    from voicefleet.platform.data.synthetic import voice_like

    root = tmp_path_factory.mktemp("docs")
    init_pretrained(root / "pretrained_models", "tiny", seed=0)
    sf.write(root / "ref.wav", voice_like(4.0, seed=1), 32000)
    sf.write(root / "alice_interview.wav", voice_like(25.0, seed=2), 32000)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shims = {"python": f'exec "{sys.executable}" "$@"\n',
             "voicefleet": f'exec "{sys.executable}" -c "import sys; sys.argv[0] = \'voicefleet\'; '
                           f'from voicefleet.cli import main; main()" "$@"\n'}
    for name, body in shims.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return root, env


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.name for b in RUN_BLOCKS])
def test_doc_block_runs(block: Block, sandbox):
    if block.not_run is not None:
        pytest.skip(f"{block.name}: not run: {block.not_run}")
    root, env = sandbox
    if RUNNABLE[block.lang] == "python":
        script = root / f"block_{block.page.stem}_{block.line}.py"
        script.write_text(block.code)
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert result.returncode == 0, (f"{block.name} failed (exit {result.returncode}):\n{block.code}\n"
                                    f"--- output (last 3000 characters) ---\n{(result.stdout + result.stderr)[-3000:]}")


DATA_BLOCKS = [block for block in ALL_BLOCKS if block.lang in ("yaml", "json")]


@pytest.mark.parametrize("block", DATA_BLOCKS, ids=[b.name for b in DATA_BLOCKS])
def test_doc_data_block_parses_and_validates(block: Block):
    """yaml and json examples parse; a Serve config's args and a sweep space validate as they would
    when loaded (both models reject unknown keys)."""
    import json

    import yaml

    data = json.loads(block.code) if block.lang == "json" else yaml.safe_load(block.code)
    assert data, f"{block.name} is empty"
    if block.lang == "yaml" and "applications" in data:
        from voicefleet.serve.settings import ServeSettings

        for application in data["applications"]:
            ServeSettings(**application.get("args", {}))
    elif block.code.startswith("# space.yaml"):
        from voicefleet.tuning.space import SearchSpace

        SearchSpace(**data)


# --- docs/architecture.md names only what exists ------------------------------------------------

ARCHITECTURE = REPO / "docs" / "architecture.md"
PATHLIKE = re.compile(r"(?<![\w./-])((?:src/)?voicefleet/[\w./-]*\w/?"
                      r"|(?:src|tests|docs|benchmarks|scripts)/[\w./*<>-]*)")
MODULE = re.compile(r"(?<![\w./-])(voicefleet(?:\.\w+)+)")
PLANNED = re.compile(r"\(planned\b")


def _module_exists(dotted: str) -> bool:
    """`voicefleet.a.b` is a module or package; `voicefleet.a.b.name` may also name something in it."""
    parts = dotted.split(".")
    for end in (len(parts), len(parts) - 1):
        base = SOURCE.parent.joinpath(*parts[:end])
        module = base.with_suffix(".py") if not base.is_dir() else base / "__init__.py"
        if module.exists():
            return end == len(parts) or re.search(rf"^\s*(?:def|class)\s+{parts[-1]}\b|^{parts[-1]}\s*[:=]",
                                                  module.read_text(), re.M) is not None
    return False


def _path_exists(path: str) -> bool:
    path = path.rstrip("/")
    if "*" in path or "<" in path:  # a pattern such as `data/part-*.parquet` or `sweeps/<id>/`: its folder
        path = path.split("*")[0].split("<")[0].rsplit("/", 1)[0]
    candidates = [REPO / path, REPO / "src" / path]
    return any(c.exists() for c in candidates)


def named_paths(text: str) -> tuple[set[str], set[str]]:
    """(existing-claimed, planned) names of modules and paths in a page."""
    claimed, planned = set(), set()
    for line in text.splitlines():
        for match in [*PATHLIKE.finditer(line), *MODULE.finditer(line)]:
            name = match.group(1).rstrip(".")
            (planned if PLANNED.match(line[match.end():].lstrip("` ")) else claimed).add(name)
    return claimed, planned


def test_architecture_page_names_only_what_exists():
    claimed, planned = named_paths(ARCHITECTURE.read_text())
    assert len(claimed) > 40, "the page should name the modules it describes"
    missing = sorted(n for n in claimed if not (_module_exists(n) if "/" not in n else _path_exists(n)))
    assert not missing, f"docs/architecture.md names what does not exist (moved or renamed?): {missing}"
    arrived = sorted(n for n in planned if _path_exists(n))
    assert not arrived, (f"docs/architecture.md lists as planned what now exists: {arrived}; "
                         "describe it with the rest and drop '(planned'")


def test_architecture_page_places_every_package():
    text = ARCHITECTURE.read_text()
    packages = sorted(p.name for p in SOURCE.iterdir() if (p / "__init__.py").exists())
    missing = [p for p in packages if f"`voicefleet/{p}/`" not in text]
    assert not missing, f"docs/architecture.md's layer table lacks: {missing}"


def test_path_check_catches_a_stale_name():
    claimed, planned = named_paths("see `voicefleet.models.nowhere` and `voicefleet/gone.py` and "
                                   "`voicefleet/inference/later.py` (planned: soon)")
    assert claimed == {"voicefleet.models.nowhere", "voicefleet/gone.py"}
    assert planned == {"voicefleet/inference/later.py"}
    assert not _module_exists("voicefleet.models.nowhere") and not _path_exists("voicefleet/gone.py")
    assert _module_exists("voicefleet.platform.cluster.ensure_ray") and _path_exists("voicefleet/models/")


# --- the README's layout section ----------------------------------------------------------------


def _load_script(path: Path):
    """A script of this repository (not on the import path) as a module."""
    name = f"_docs_checked_{path.parent.name}_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_readme_layout_lists_exactly_the_package_folders():
    layout = _load_script(REPO / "scripts" / "layout.py")
    text = (REPO / "README.md").read_text()
    start, end = layout.section_bounds(text)
    listed = set(re.findall(r"`(src/voicefleet/[\w/]*)`", text[start:end]))
    actual = {f.relative_to(REPO).as_posix() + "/" for f in layout.package_folders()}
    assert listed == actual, (f"README layout: missing {sorted(actual - listed)}, gone {sorted(listed - actual)}; "
                              "run `python scripts/layout.py --write`")


def test_every_package_folder_describes_itself():
    layout = _load_script(REPO / "scripts" / "layout.py")
    assert all(layout.summary(folder) for folder in layout.package_folders())


# --- benchmarks/RESULTS.md ----------------------------------------------------------------------

RESULTS = REPO / "benchmarks" / "RESULTS.md"


def _summary_rows(text: str) -> list[list[str]]:
    report = _load_script(REPO / "benchmarks" / "_report.py")
    head = text.split("\n" + report.HISTORY_HEADING + "\n", 1)[0]
    assert report.SUMMARY_HEADING in head.splitlines(), "RESULTS.md must open with the summary table"
    rows = [line.strip("|").split("|") for line in head.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header row


def test_results_summary_points_at_existing_sections_for_every_script():
    text = RESULTS.read_text()
    rows = _summary_rows(text)
    history = text.split("\n## History\n", 1)[1]
    sections = set(re.findall(r"^## (.+)\n\n(\d{4}-\d\d-\d\d \d\d:\d\d UTC)", history, re.M))
    broken = [row[-1] for row in rows if tuple(row[-1].rsplit(", ", 1)) not in sections]
    assert not broken, f"summary rows pointing at no section of the history: {broken}"
    scripts = {f"`{p.name}`" for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert scripts <= {row[0] for row in rows}, f"benchmarks without a summary row: {scripts - {r[0] for r in rows}}"


def test_report_appends_below_the_summary(tmp_path, monkeypatch):
    report = _load_script(REPO / "benchmarks" / "_report.py")
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(report, "RESULTS", results)
    report.report("First", ["a"], [[1]])  # a new file gets the summary first
    report.report("Second", ["b"], [[2]])
    text = results.read_text()
    assert text.index(report.SUMMARY_HEADING) < text.index(report.HISTORY_HEADING) < text.index("## First") \
        < text.index("## Second")
    results.write_text("# Benchmark results\n\nno history heading\n")
    with pytest.raises(SystemExit, match="History"):
        report.report("Third", ["c"], [[3]])
