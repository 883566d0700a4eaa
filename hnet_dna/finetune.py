"""``python -m hnet_dna.finetune``: the fine-tuning protocol in one command.

::

    python -m hnet_dna.finetune --config pipelines/finetune/promoter_tss_chr20.yaml \\
        --seeds 0 1 2 --out results/promoter [any --data.* / --model.* / --trainer.* override]

For each seed: ``fit`` (model selection on ``val/mcc`` by the recipe's ModelCheckpoint), then
``test`` with the selected checkpoint; and the k-mer logistic-regression baseline (k and C chosen
on validation) on exactly the same splits. The data split is the data module's (its own
``--data.seed``), the same for every seed: seeds change the model's initialisation and the order
of batches only.

Writes into ``--out``:

* ``results.json``: ``runs`` (one entry per system and seed: every test metric, the checkpoint
  used and its validation score), ``summary`` (system -> test metric -> ``mean``, ``sd`` with
  ddof 1, ``null`` with one seed), the config, data files, class names, seeds and split sizes;
* ``results.md``: the same as a table (also printed);
* ``runs/seed<S>/``: each fit's logs and checkpoints.

A rerun skips seeds already finished, and refuses to mix results when the config, the overrides
or the data files differ from those of the finished seeds (a fingerprint of all three).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

METRICS = ("test/mcc", "test/accuracy", "test/f1_macro", "test/auroc")

__all__ = ["main", "run_protocol"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_files(hparams) -> list[str]:
    files = []
    for key in ("train", "valid", "test"):
        value = hparams.get(key)
        if isinstance(value, dict):
            files += [str(v) for v in value.values()]
        elif value is not None:
            path = Path(value)
            files += [str(p) for p in sorted(path.rglob("*.txt"))] if path.is_dir() else [str(path)]
    return files


def _atomic_write(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def _summary(runs: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for system in sorted({r["system"] for r in runs}):
        rows = [r for r in runs if r["system"] == system]
        out[system] = {}
        for metric in METRICS:
            values = [r["test"][metric] for r in rows if r["test"].get(metric) is not None]
            mean = sum(values) / len(values) if values else None
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
            out[system][metric] = {"mean": mean, "sd": sd, "n": len(values)}
    return out


def _table(summary: dict) -> str:
    lines = ["| system | " + " | ".join(m.removeprefix("test/") for m in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for system, metrics in summary.items():
        cells = []
        for m in METRICS:
            s = metrics[m]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s["sd"] is not None else ""))
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _build_cli(args: list[str]):
    from lightning.pytorch import LightningDataModule, LightningModule

    from .__main__ import TRAINER_DEFAULTS, HNetCLI

    return HNetCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                   save_config_kwargs={"overwrite": True}, trainer_defaults=TRAINER_DEFAULTS, run=False, args=args)


def _model_run(cli_args: list[str], seed: int, root: Path) -> dict:
    """fit then test with the checkpoint selected on validation; returns the run's entry."""
    cli = _build_cli([*cli_args, "--seed_everything", str(seed), "--trainer.default_root_dir", str(root)])
    cli.datamodule.check_ready("fit", cli.trainer.world_size)
    cli.datamodule.check_ready("test", cli.trainer.world_size)
    callback = cli.trainer.checkpoint_callback
    if callback is None or callback.monitor != "val/mcc":
        raise SystemExit("hnet_dna.finetune: the recipe needs a ModelCheckpoint with monitor val/mcc (model selection)")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = callback.best_model_path
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    return {"system": "model", "seed": seed, "checkpoint": best,
            "val_mcc": float(callback.best_model_score) if callback.best_model_score is not None else None,
            "test": {k: float(v) for k, v in results.items() if k.startswith("test/")}}


def _kmer_run(datamodule, seed: int) -> dict:
    import torch

    from .baselines import kmer_logistic_regression, kmer_predict_proba
    from .tasks.finetune import classification_metrics

    def split(name):
        ds = datamodule.datasets[name]
        return [r.sequence for r in ds.records], ds.labels

    fitted = kmer_logistic_regression(split("train"), split("val"), len(datamodule.class_names), seed=seed)
    sequences, labels = split("test")
    probs = torch.tensor(kmer_predict_proba(fitted, sequences), dtype=torch.float32)
    metrics = classification_metrics(len(datamodule.class_names))
    for name, metric in metrics.items():
        metric.update(probs[:, 1] if probs.shape[1] == 2 and name == "auroc" else probs, torch.tensor(labels))
    test = {f"test/{k}": float(v) for k, v in metrics.compute().items()}
    return {"system": "kmer_lr", "seed": seed, "checkpoint": None, "val_mcc": fitted["val_mcc"],
            "k": fitted["k"], "C": fitted["C"], "test": test}


def run_protocol(config: str, overrides: list[str], seeds: list[int], out: Path) -> dict:
    """Run (or continue) the protocol; returns what ``results.json`` holds."""
    cli_args = ["--config", config, *overrides]
    probe = _build_cli(cli_args)  # validates config and data before anything runs or is written
    dm = probe.datamodule
    if not hasattr(dm, "class_names"):
        raise SystemExit("hnet_dna.finetune: the config's data must be hnet_dna.data.LabelledDataModule")
    files = _data_files(dm.hparams)
    fingerprint = hashlib.sha256(json.dumps({
        "config": Path(config).read_text(), "overrides": overrides, "data": {f: _sha256(Path(f)) for f in files},
    }, sort_keys=True).encode()).hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else None
    if previous is not None and previous.get("fingerprint") != fingerprint:
        raise SystemExit(
            f"hnet_dna.finetune: {results_path} holds results of another config, overrides or data "
            f"(fingerprint {previous.get('fingerprint')} vs {fingerprint}); use another --out or remove it"
        )
    runs = previous["runs"] if previous else []
    done = {(r["system"], r["seed"]) for r in runs}
    for seed in seeds:
        if ("model", seed) not in done:
            print(f"hnet_dna.finetune: seed {seed}: fit, then test with the checkpoint selected on val/mcc", file=sys.stderr, flush=True)
            runs.append(_model_run(cli_args, seed, out / "runs" / f"seed{seed}"))
        if ("kmer_lr", seed) not in done:
            runs.append(_kmer_run(dm, seed))
        result = {
            "fingerprint": fingerprint, "config": config, "overrides": overrides, "data_files": files,
            "class_names": dm.class_names, "seeds": sorted({r["seed"] for r in runs}),
            "split_sizes": {s: len(dm.datasets[s]) for s in ("train", "val", "test")},
            "runs": sorted(runs, key=lambda r: (r["system"], r["seed"])), "summary": _summary(runs),
        }
        _atomic_write(results_path, json.dumps(result, indent=2) + "\n")  # after every seed: resumable
    table = _table(result["summary"])
    sizes = ", ".join(f"{k} {v:,}" for k, v in result["split_sizes"].items())
    _atomic_write(out / "results.md", f"# {Path(config).name}: test metrics over seeds {result['seeds']}\n\n"
                  f"Splits: {sizes}; classes: {', '.join(dm.class_names)}. Mean ± sd (ddof 1).\n\n{table}\n")
    print(table)
    return result


def main(argv: list[str] | None = None) -> None:
    from .__main__ import exit_on_user_error

    parser = argparse.ArgumentParser(prog="python -m hnet_dna.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a fine-tuning recipe (pipelines/finetune/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and the runs")
    args, overrides = parser.parse_known_args(argv)
    exit_on_user_error(lambda: run_protocol(args.config, overrides, args.seeds, args.out), prog="hnet_dna.finetune")


if __name__ == "__main__":
    main()
