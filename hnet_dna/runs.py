"""What every command's run shares, whatever it computes: one-line user errors and exit status 2,
fingerprints of the work asked for, atomic and resumable outputs, progress bars, and the DDP
process group's teardown.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .data.genome import DataError
from .model.hnet import InputError
from .tokenizer import SequenceError
from .weights import CheckpointError

__all__ = ["USER_ERRORS", "exit_on_user_error", "closing_process_group", "fingerprint", "file_sha256",
           "atomic_path", "atomic_write_text", "json_text", "check_output", "ResumableParts", "Progress"]

USER_ERRORS = (DataError, ConfigError, SequenceError, CheckpointError, InputError)


# ------------------------------------------------------------------------------ errors
def exit_on_user_error(run, prog: str = "hnet_dna") -> None:
    """Call ``run()``; an error in the user's inputs becomes one line on stderr and exit status 2."""
    try:
        run()
    except Exception as exc:
        err = _user_error(exc)
        if err is None:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)


def _user_error(exc: BaseException) -> BaseException | None:
    """Our input error, possibly wrapped by jsonargparse or Lightning."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, USER_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def closing_process_group() -> Iterator[None]:
    """Around a Lightning run: destroy the process group the run created, once it has finished,
    while the interpreter is still whole.

    Lightning destroys it at exit for NCCL only. A gloo group (DDP on CPU) left to the interpreter's
    shutdown can have its worker threads free tensors after Python is gone, and the process then
    aborts (SIGABRT, "terminate called without an active exception") after a finished fit: seen
    once in CI here, and the failure pytorch/pytorch#179291 describes. A group that existed before
    (the caller's) is left alone; so is one after a failed run, whose error must reach the user as
    it is (destroying a group whose peer died could raise over it, or wait on the dead peer)."""
    import torch.distributed as dist

    had_group = dist.is_available() and dist.is_initialized()
    yield
    if not had_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------ fingerprints
def fingerprint(*parts) -> str:
    """A hash of files (by content) and values, to tell whether a rerun asks for the same work."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(str(part.resolve()).encode())
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        elif isinstance(part, torch.nn.Module):
            for name, tensor in sorted(part.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ outputs
@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path`` (same suffix); it becomes ``path`` only if the block
    finishes, so a reader never sees half a file and a failed run leaves the old file as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{''.join(path.suffixes[-2:])}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def json_text(value) -> str:
    """``value`` as indented JSON, with every NaN or infinite float written as ``null``: JSON has no
    NaN, and a bare ``NaN`` breaks strict readers (and reads as a number where there is none)."""

    def finite(x):
        if isinstance(x, float) and not np.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    return json.dumps(finite(value), indent=2, allow_nan=False) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def check_output(path: Path, suffixes: tuple[str, ...], flag: str = "--output") -> Path:
    """Checks on an output path before any work: its suffix and its folder."""
    path = Path(path)
    if not path.name.lower().endswith(suffixes):
        raise DataError(f"{flag} {path}: the name must end with {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise DataError(f"{flag} {path}: no such folder {path.parent}")
    if path.is_dir():
        raise DataError(f"{flag} {path}: is a folder")
    return path


class ResumableParts:
    """Results kept in ``OUT.parts/`` as they come (one ``.npz`` per part, written atomically), so
    a killed run continues where it stopped when rerun with the same arguments. A rerun with other
    arguments (another fingerprint) starts over. The folder goes once the output is written."""

    def __init__(self, output: Path, key: str):
        self.folder = self.folder_for(output)
        self.key = key
        manifest = self.folder / "manifest.json"
        if self.folder.exists():
            try:
                same = json.loads(manifest.read_text()).get("fingerprint") == key
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.folder)
        self.folder.mkdir(exist_ok=True)
        if not manifest.exists():
            manifest.write_text(json.dumps({"fingerprint": key}) + "\n")
        self.done = {int(p.stem.split("-")[1]) for p in self.folder.glob("part-*.npz")}
        self._kill_after = int(os.environ.get("HNET_DNA_KILL_AFTER_PARTS", "0"))  # tests: a SIGKILL
        self._written = 0

    def __contains__(self, part: int) -> bool:
        return part in self.done

    def save(self, part: int, arrays: dict[str, np.ndarray]) -> None:
        target = self.folder / f"part-{part:06d}.npz"
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        self.done.add(part)
        self._written += 1
        if self._kill_after and self._written >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def load(self, part: int) -> dict[str, np.ndarray]:
        with np.load(self.folder / f"part-{part:06d}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    @staticmethod
    def folder_for(output: Path) -> Path:
        return output.with_name(output.name + ".parts")

    @classmethod
    def discard(cls, output: Path) -> None:
        """Remove the parts of ``output`` (once it is written)."""
        shutil.rmtree(cls.folder_for(output), ignore_errors=True)


class Progress:
    """A tqdm bar over sequences (or windows) that also shows bases per second (on stderr; off with ``enabled=False``)."""

    def __init__(self, total: int, total_bases: int, desc: str, enabled: bool = True, unit: str = "seq"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, smoothing=0.1)
        self.bases = 0
        self.total_bases = total_bases
        self.t0 = time.perf_counter()

    def update(self, sequences: int, bases: int) -> None:
        self.bases += bases
        rate = self.bases / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} bases/s", refresh=False)
        self.bar.update(sequences)

    def close(self) -> None:
        self.bar.close()

