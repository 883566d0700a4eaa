"""Break one named behaviour at a time and check that the test meant to guard it fails.

Run by hand, not by the suite (it takes a few minutes)::

    python -m tests.mutants            # every mutant
    python -m tests.mutants --list     # their names
    python -m tests.mutants --only lm_head_init router_detached

Each mutant is a text replacement in one file of the package. The working tree is copied to a
temporary folder, the mutant applied to the copy, and the guarding test run there (the copy comes
first on PYTHONPATH, also for the subprocesses the test starts); the repository itself is never
touched. A mutant is *caught* when the test fails (pytest exit status 1), *missed* when it passes;
any other status (the mutant did not apply, collection broke) is reported as an error. The tests
are first run once on the unmutated copy, which must pass.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked-but-not-ignored files)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_tests(tree: Path, nodes: list[str], timeout: int) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *nodes],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr


def apply(tree: Path, mutant: Mutant) -> None:
    path = tree / mutant.file
    text = path.read_text()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise ValueError(f"{mutant.name}: expected one occurrence of {old!r} in {mutant.file}, found {text.count(old)}")
        text = text.replace(old, new)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="mutant names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    parser.add_argument("--why", action="store_true", help="show the first failure line of each caught mutant")
    args = parser.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:32} {m.what}")
        return 0
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or []) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="hnet_mutants_") as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(clean)
        where = subprocess.run([sys.executable, "-c", "import hnet_dna; print(hnet_dna.__file__)"], cwd=tmp,
                               env=dict(os.environ, PYTHONPATH=str(clean)), capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(clean)):
            print(f"the copy is not what gets imported ({where}); aborting", file=sys.stderr)
            return 2
        nodes = sorted({m.test for m in chosen})
        status, seconds, tail = run_tests(clean, nodes, args.timeout * 2)
        if status != 0:
            print(f"the unmutated tests fail (status {status}); fix them first:\n{tail[-3000:]}", file=sys.stderr)
            return 2
        print(f"unmutated: {len(nodes)} guarding test(s) pass ({seconds:.0f} s)\n")
        print(f"{'mutant':32} {'result':8} {'s':>5}  test")
        results = []
        for m in chosen:
            tree = Path(tmp) / m.name
            shutil.copytree(clean, tree)
            apply(tree, m)
            status, seconds, tail = run_tests(tree, [m.test], args.timeout)
            result = {0: "MISSED", 1: "caught"}.get(status, f"error {status}")
            results.append(result)
            print(f"{m.name:32} {result:8} {seconds:5.0f}  {m.test.split('::')[-1]}", flush=True)
            if status not in (0, 1):
                print(tail[-3000:], file=sys.stderr)
            elif status == 1 and args.why:
                first = next((line for line in tail.splitlines() if line.startswith(("E ", "Failed"))), "")
                print(f"{'':32} {first[:160]}")
            shutil.rmtree(tree)
    caught = results.count("caught")
    print(f"\n{caught} of {len(results)} mutants caught")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
