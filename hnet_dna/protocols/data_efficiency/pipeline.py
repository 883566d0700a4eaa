"""The pipeline: plan, cut the held-out windows, fit every (seed, model) not yet finished in its
own process, then write curves and summary (:mod:`hnet_dna.protocols.data_efficiency.report`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...runs import atomic_path, fingerprint
from ...config import ConfigError
from .config import BenchmarkConfig
from .plan import cut_heldout, make_plan
from .report import format_summary, run_provenance, write_results

__all__ = ["run_pipeline", "FitFailed", "work_fingerprint"]


class FitFailed(RuntimeError):
    """A model's fit stopped (its subprocess failed); what was finished is kept."""


def run_pipeline(config: BenchmarkConfig, out: Path, command: str = "", progress: bool = True) -> dict:
    """Fit every (seed, model) not yet finished under ``out``, then write curves and summary."""
    plan = make_plan(config)
    heldout = cut_heldout(config)  # validates the data before anything is written
    key = work_fingerprint(plan, heldout)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder (created if missing)")
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old.get("fingerprint") != key:
            raise ConfigError(
                f"--out {out}: holds a run of another config (or other data); give a new --out folder, or delete "
                f"{out} to start over"
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not a data-efficiency run folder; give a new or empty folder")
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    heldout_paths = {}
    for name, arr in heldout.items():
        p = out / "heldout" / f"{name}.npy"
        if not p.exists():
            with atomic_path(p) as tmp:
                np.save(tmp, arr)
        heldout_paths[name] = str(p.resolve())
    if not plan_path.exists():
        with atomic_path(plan_path) as tmp:
            tmp.write_text(json.dumps({"fingerprint": key, "started": run_provenance(command), **asdict(plan)}, indent=2) + "\n")

    say = (lambda msg: print(f"hnet_dna.data_efficiency: {msg}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"{len(plan.model_names)} models x {len(config.seeds)} seeds; {plan.steps} steps of {plan.bases_per_step:,} "
        f"bases (warmup {plan.warmup_steps}{f', then decay {plan.decay_steps}' if plan.decay_steps else ''}); "
        f"curve points at steps {plan.eval_steps}")
    for seed in config.seeds:
        for name in plan.model_names:
            run_dir = out / "runs" / name / f"seed{seed}"
            spec = {
                "name": name, "seed": seed, "model": config.models[name]["model"],
                "lr": config.models[name].get("lr", config.lr), "weight_decay": config.weight_decay,
                "data": config.data, "trainer": config.trainer, "steps": plan.steps,
                "warmup_steps": plan.warmup_steps, "decay_steps": plan.decay_steps,
                "bases_per_step": plan.bases_per_step, "eval_steps": plan.eval_steps, "heldout": heldout_paths,
                "checkpoint_interval_s": config.checkpoint_interval_s, "export_models": config.export_models,
                "model_identity": plan.models[name], "data_sha256": plan.data_sha256,
            }
            if (run_dir / "result.json").exists() or (run_dir / "last.ckpt").exists():
                _check_kept_run(run_dir, spec)  # finished, or to be resumed: fitted to this spec?
            if (run_dir / "result.json").exists():
                say(f"{name} seed {seed}: done earlier, kept")
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            spec_path = run_dir / "spec.json"
            spec_path.write_text(json.dumps(spec, indent=2) + "\n")
            resumed = " (resuming)" if (run_dir / "last.ckpt").exists() else ""
            say(f"{name} seed {seed}: fitting{resumed}; log in {run_dir / 'fit.log'}")
            t0 = time.perf_counter()
            rc = _run_fit(spec_path, run_dir / "fit.log", config.trainer.get("accelerator", "auto"))
            if rc != 0:
                tail = "".join((run_dir / "fit.log").read_text().splitlines(keepends=True)[-15:])
                raise FitFailed(f"fitting {name} (seed {seed}) failed with exit status {rc}; the end of "
                                   f"{run_dir / 'fit.log'}:\n{tail}\nRerun the same command to continue.")
            say(f"{name} seed {seed}: done in {time.perf_counter() - t0:.0f} s")
    started = json.loads(plan_path.read_text()).get("started")
    summary = write_results(plan, config, out, {"started": started, "finished": run_provenance(command)})
    say(f"wrote {out / 'curves.csv'}, {out / 'curves.png'}, {out / 'summary.json'}")
    print(format_summary(summary))
    return summary


def work_fingerprint(plan, heldout: dict) -> str:
    """What decides a run's work: the config, every model's resolved config and weights, the
    training files' and the held-out bases' contents (the rest of the plan follows from them)."""
    return fingerprint(plan.config, {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in heldout.items()},
                       plan.models, plan.data_sha256)


# What a fit's result depends on (a spec's other fields, the held-out files' paths, the checkpoint
# interval and model export, and the data and trainer settings below, do not change it).
FIT_FIELDS = ("name", "seed", "model", "lr", "weight_decay", "steps", "warmup_steps", "decay_steps", "bases_per_step",
              "eval_steps", "model_identity", "data_sha256", "data", "trainer")
NOT_FIT = {"data": ("num_workers", "index_dir"),
           "trainer": ("enable_progress_bar", "enable_model_summary", "logger", "log_every_n_steps", "default_root_dir")}


def _fit_defining(spec: dict) -> dict:
    out = {k: spec.get(k) for k in FIT_FIELDS}
    for key, ignored in NOT_FIT.items():
        if isinstance(out[key], dict):
            out[key] = {k: v for k, v in out[key].items() if k not in ignored}
    return out


def _check_kept_run(run_dir: Path, spec: dict) -> None:
    """A finished (or checkpointed) run is kept only if it was fitted to what this run would fit it
    to (a seed fitted in another folder and copied in, as ``cpu_small.yaml`` suggests on two cores,
    included): every field that changes the fit (:data:`FIT_FIELDS`)."""
    kept_path = run_dir / "spec.json"
    try:
        kept = json.loads(kept_path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{run_dir}: has a finished or checkpointed run but no readable spec.json to tell what it "
                          f"was fitted to; remove {run_dir} to fit it again") from None
    mine, theirs = _fit_defining(spec), _fit_defining(kept)
    differ = sorted(k for k in FIT_FIELDS if mine[k] != theirs[k])
    if differ:
        raise ConfigError(
            f"{run_dir}: its finished run was fitted to {kept_path}, which differs from this run's spec in "
            f"{', '.join(differ)} (kept: {', '.join(f'{k}={theirs[k]!r}'[:120] for k in differ[:3])}); remove "
            f"{run_dir} to fit it again, or run that config in its own --out folder"
        )


def _run_fit(spec_path: Path, log_path: Path, accelerator: str) -> int:
    """Fit in a child process; its output goes to ``log_path``; returns its exit status.

    On CPU (where the platform has it) the child comes from a fork server that imported the
    module once: fits start in a fraction of a second instead of re-importing Lightning, and the
    server has run no computation, so a child never inherits an OpenMP pool (forking a process
    that has run parallel torch ops can hang the child). Anywhere else the child is a fresh
    interpreter (a GPU is initialised in the child only).
    """
    import multiprocessing

    if accelerator == "cpu" and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["hnet_dna.protocols.data_efficiency.worker"])
        child = ctx.Process(target=_fit_in_child, args=(spec_path, log_path, dict(os.environ), os.getcwd()))
        child.start()
        child.join()
        return child.exitcode
    with log_path.open("a") as log:
        return subprocess.call([sys.executable, "-m", "hnet_dna.protocols.data_efficiency.worker", str(spec_path)],
                               stdout=log, stderr=subprocess.STDOUT)


def _fit_in_child(spec_path: Path, log_path: Path, environ: dict, cwd: str) -> None:
    # As a fresh subprocess would: the caller's environment and folder of now (the fork server
    # keeps those of when it started), output to the log.
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    log = log_path.open("a")
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    from .worker import fit_one

    try:
        fit_one(spec_path)
    except BaseException:  # noqa: BLE001  (reported in the log; the parent sees the exit status)
        import traceback

        traceback.print_exc(file=log)
        log.flush()
        os._exit(1)
    log.flush()
    os._exit(0)  # skip the interpreter's exit handlers: the fork server's, not this fit's


