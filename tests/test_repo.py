"""The README's two commands are exactly what CI runs, the quick start works, and the mutants still apply."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"## {section}\n\n```bash\n(.*?)```", text, re.S)
    assert block, f"README has no ## {section} bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_commands():
    install, test = readme_commands("Install"), readme_commands("Test")
    assert len(install) == 1 and len(test) == 1
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    tail = [line for line in ci if line and not line.startswith("#")][-2:]
    assert tail == [install[0], test[0]]


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README quick start", "exec"), {})
    assert (tmp_path / "my-model" / "model.safetensors").is_file()


def test_every_mutant_still_applies():
    """Each mutant's text occurs exactly once in its file, and the test named to catch it exists
    (``python -m tests.mutants`` stops at the first that does not: a refactor must carry its
    mutants along)."""
    from .mutants import MUTANTS

    stale = [f"{m.name}: {old[:60]!r} occurs {(ROOT / m.file).read_text().count(old)} times in {m.file}"
             for m in MUTANTS for old, _ in m.edits if (ROOT / m.file).read_text().count(old) != 1]
    for m in MUTANTS:
        path, test = m.test.split("::")
        name = re.match(r"\w+", test).group(0)
        if not (ROOT / path).is_file() or f"def {name}(" not in (ROOT / path).read_text():
            stale.append(f"{m.name}: no test {name} in {path}")
    assert not stale, "\n".join(stale)
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)


def _github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_headline_page_links_to_records_that_exist():
    """benchmarks/README.md's every RESULTS.md#anchor names a dated record's heading."""
    records = ROOT / "benchmarks" / "RESULTS.md"
    anchors = {_github_anchor(line.lstrip("#")) for line in records.read_text().splitlines() if line.startswith("## ")}
    links = re.findall(r"\(RESULTS\.md#([^)]+)\)", (ROOT / "benchmarks" / "README.md").read_text())
    assert len(links) >= 10
    assert [link for link in links if link not in anchors] == []
