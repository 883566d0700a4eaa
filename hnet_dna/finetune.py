"""``python -m hnet_dna.finetune``: the fine-tuning protocol, with the field's controls, in one command.

::

    python -m hnet_dna.finetune --config pipelines/finetune/promoter_tss_chr20.yaml \\
        --seeds 0 1 2 --out results/promoter [--folds 5] [--systems model cnn ...] \\
        [any --data.* / --model.* / --trainer.* override]

Systems, all on exactly the same splits (every row of results tells which):

* ``model``: the recipe's model: ``fit`` (selection on ``val/mcc`` by the recipe's
  ModelCheckpoint), then ``test`` with the selected checkpoint;
* ``scratch``: the same architecture from random initialisation, with the same recipe, seeds and
  budget (run whenever the recipe's backbone is pretrained: the control that says whether
  pretraining helped);
* ``cnn``: a small CNN trained from scratch (:class:`~hnet_dna.model.cnn.CNNClassifier`, positions
  flattened into a dense head, 0.24-0.33 M parameters for 60-400 bp; Genomic Benchmarks' and
  Caduceus's baseline), same data, trainer and selection;
* ``probe``: logistic regression on the frozen backbone's pooled features (C chosen on validation);
* ``kmer_lr``: logistic regression on k-mer frequencies (k and C chosen on validation).

A seed changes the model's initialisation, the order of training batches and the
reverse-complement draws (``--data.sample_seed``); the split is the data module's (``--data.seed``)
and stays fixed. ``probe`` and ``kmer_lr`` are deterministic given the split (fitted once per split,
recorded for every seed; their summary counts one run per split, so with one split their sd is
undefined). ``--folds K`` cross-validates sets without a given test split (a
stratified, seeded K-fold partition; each fold's test rows are one fold, its validation rows come
out of the others): results are then over folds x seeds.

Writes into ``--out``:

* ``results.json``: ``runs`` (one entry per system, fold and seed: every test metric, the
  checkpoint used and its validation score), ``summary`` (system -> test metric -> ``mean``,
  ``sd`` with ddof 1 over folds x seeds, ``n``), ``winners`` (per metric: the best system, the
  runner-up, the margin and the margin in units of the larger sd of the two), the config, data
  files, class names, seeds, folds and split sizes;
* ``results.md``: the same as a table (also printed) and a line per metric saying who wins;
* ``runs/<system>/[fold<F>-]seed<S>/``: each fit's logs and checkpoints.

A rerun skips the runs already finished (results are written after each one), and refuses to mix
results when the config, the overrides, the folds or the data files differ from those of the
finished runs (a fingerprint of all of them). A rerun whose backbone changed since (a new default
model, a retrained folder) keeps the runs that do not rest on it (cnn, kmer_lr; scratch too when
only the weights changed, not the architecture) and redoes the others.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

METRICS = ("test/mcc", "test/accuracy", "test/f1_macro", "test/auroc")
SYSTEMS = ("model", "scratch", "cnn", "probe", "kmer_lr")
DETERMINISTIC = ("probe", "kmer_lr")  # no seed enters their fit

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
    present = {r["system"] for r in runs}
    for system in [s for s in SYSTEMS if s in present] + sorted(present - set(SYSTEMS)):
        rows = [r for r in runs if r["system"] == system]
        if system in DETERMINISTIC:  # one fit per split, recorded per seed: count it once
            rows = list({r.get("fold"): r for r in rows}.values())
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


def _fit_test(cli, module, system: str, seed: int, fold: int | None) -> dict:
    """fit ``module`` with the CLI's trainer and data, then test the checkpoint selected on val/mcc."""
    cli.datamodule.check_ready("fit", cli.trainer.world_size)
    cli.datamodule.check_ready("test", cli.trainer.world_size)
    callback = cli.trainer.checkpoint_callback
    if callback is None or callback.monitor != "val/mcc":
        raise SystemExit("hnet_dna.finetune: the recipe needs a ModelCheckpoint with monitor val/mcc (model selection)")
    cli.trainer.fit(module, datamodule=cli.datamodule)
    best = callback.best_model_path
    if not best:
        raise SystemExit(f"hnet_dna.finetune: {system} seed {seed}: no checkpoint was selected on val/mcc (did validation run?); "
                         "nothing to test")
    results = cli.trainer.test(module, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    return {"system": system, "fold": fold, "seed": seed, "checkpoint": best,
            "val_mcc": float(callback.best_model_score) if callback.best_model_score is not None else None,
            "test": {k: float(v) for k, v in results.items() if k.startswith("test/")}}


def _trained_run(system: str, cli_args: list[str], seed: int, fold: int | None, root: Path) -> dict:
    """``model``, ``scratch`` or ``cnn``: one fit and test under ``seed``."""
    cli = _build_cli([*cli_args, "--seed_everything", str(seed), "--data.sample_seed", str(seed),
                      "--trainer.default_root_dir", str(root)])
    module = cli.model if system == "model" else _control_module(system, cli.model, seed)
    return _fit_test(cli, module, system, seed, fold)


def _control_module(system: str, module, seed: int):
    """``scratch``: the recipe's module with its backbone's architecture freshly initialised;
    ``cnn``: the CNN baseline. Their initial weights depend on ``seed`` alone."""
    import lightning.pytorch as pl

    pl.seed_everything(seed, verbose=False)
    if system == "scratch":
        from .tasks import FinetuneModule

        import inspect

        config = module.backbone.config.to_dict()  # the same architecture, random weights
        fields = inspect.signature(FinetuneModule).parameters
        return FinetuneModule(**{k: v for k, v in module.hparams.items() if k in fields and k not in ("backbone", "backbone_config")},
                              backbone=config)
    from .tasks import CNNBaselineModule

    return CNNBaselineModule()


def _split(datamodule, name: str):
    ds = datamodule.datasets[name]
    return [r.sequence for r in ds.records], ds.labels


def _test_metrics(datamodule, probs) -> dict:
    import torch

    from .tasks.finetune import classification_metrics

    probs = torch.as_tensor(probs, dtype=torch.float32)
    labels = torch.tensor(datamodule.datasets["test"].labels)
    metrics = classification_metrics(len(datamodule.class_names))
    for name, metric in metrics.items():
        metric.update(probs[:, 1] if probs.shape[1] == 2 and name == "auroc" else probs, labels)
    return {f"test/{k}": float(v) for k, v in metrics.compute().items()}


def _kmer_run(datamodule, seed: int, fold: int | None) -> dict:
    from .baselines import kmer_logistic_regression, kmer_predict_proba

    fitted = kmer_logistic_regression(_split(datamodule, "train"), _split(datamodule, "val"),
                                      len(datamodule.class_names), seed=seed)
    test = _test_metrics(datamodule, kmer_predict_proba(fitted, _split(datamodule, "test")[0]))
    return {"system": "kmer_lr", "fold": fold, "seed": seed, "checkpoint": None, "val_mcc": fitted["val_mcc"],
            "k": fitted["k"], "C": fitted["C"], "test": test}


def probe_features(backbone, datamodule, pooling: str) -> dict:
    """Pooled features (N, D) of the frozen backbone for the train, val and test rows (the recipe's
    pooling; ``last`` is probed with ``mean``, ``flatten`` lays every position end to end); averaged with the reverse complement's where the
    labels are strand-symmetric."""
    import numpy as np

    from .embed import embed_sequences

    if pooling != "flatten":
        pooling = pooling if pooling == "chunks" else "mean"
        return {name: embed_sequences(_split(datamodule, name)[0], backbone, pooling=pooling, window=None,
                                      rc_average=datamodule.strand_symmetric, batch_size=64)["embeddings"]
                for name in ("train", "val", "test")}
    longest = max(len(ids) for name in ("train", "val", "test") for ids in datamodule.datasets[name].ids)
    out = {}
    for name in ("train", "val", "test"):  # every position laid end to end, zero-padded to the longest
        got = embed_sequences(_split(datamodule, name)[0], backbone, pooling="none", window=None,
                              rc_average=datamodule.strand_symmetric, batch_size=64)
        values, offsets = got["position_embeddings"], got["position_offsets"]
        laid = np.zeros((len(offsets) - 1, longest, values.shape[1]), dtype=np.float32)
        for i, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
            laid[i, : hi - lo] = values[lo:hi]
        out[name] = laid.reshape(len(laid), -1)
    return out


def _probe_run(features: dict, datamodule, seed: int, fold: int | None) -> dict:
    from .baselines import linear_probe

    labels = {name: datamodule.datasets[name].labels for name in features}
    fitted = linear_probe((features["train"], labels["train"]), (features["val"], labels["val"]), seed=seed)
    test = _test_metrics(datamodule, fitted["model"].predict_proba(features["test"]))
    return {"system": "probe", "fold": fold, "seed": seed, "checkpoint": None, "val_mcc": fitted["val_mcc"],
            "C": fitted["C"], "test": test}


def winners(summary: dict) -> dict:
    """Per metric: the system with the best mean, the runner-up, the margin, and the margin in units
    of the larger sd of the two (None where both are deterministic or seen once)."""
    out = {}
    for metric in METRICS:
        ranked = sorted((s for s in summary if summary[s][metric]["mean"] is not None),
                        key=lambda s: summary[s][metric]["mean"], reverse=True)
        if len(ranked) < 2:
            continue
        first, second = (summary[s][metric] for s in ranked[:2])
        sds = [x["sd"] for x in (first, second) if x["sd"]]
        margin = first["mean"] - second["mean"]
        out[metric] = {"best": ranked[0], "runner_up": ranked[1], "margin": margin,
                       "margin_sd": margin / max(sds) if sds else None}
    return out


def _winner_lines(summary: dict) -> str:
    lines = []
    for metric, w in winners(summary).items():
        name = metric.removeprefix("test/")
        if w["margin"] == 0:
            lines.append(f"- {name}: **{w['best']}** and {w['runner_up']} tie")
            continue
        units = f" = {w['margin_sd']:.1f} sd" if w["margin_sd"] is not None else " (no spread to compare with)"
        lines.append(f"- {name}: **{w['best']}** wins, ahead of {w['runner_up']} by {w['margin']:.3f}{units}")
    return "\n".join(lines)


def _backbone_spec(cli) -> str | dict | None:
    return getattr(cli.model, "hparams", {}).get("backbone")


def run_protocol(config: str, overrides: list[str], seeds: list[int], out: Path, folds: int = 0,
                 systems: list[str] | None = None) -> dict:
    """Run (or continue) the protocol; returns what ``results.json`` holds."""
    from .model.loading import is_untrained

    cli_args = ["--config", config, *overrides]
    seeds = list(dict.fromkeys(seeds))  # a seed given twice is one run
    fold_list: list[int | None] = list(range(folds)) if folds else [None]

    def fold_args(fold):
        return [] if fold is None else ["--data.folds", str(folds), "--data.fold", str(fold)]

    check = _build_cli([*cli_args, *fold_args(fold_list[0])])  # validates config and data before anything runs
    dm = check.datamodule
    if not hasattr(dm, "class_names"):
        raise SystemExit("hnet_dna.finetune: the config's data must be hnet_dna.data.LabelledDataModule")
    if not hasattr(check.model, "backbone"):
        raise SystemExit("hnet_dna.finetune: the config's model must be hnet_dna.tasks.FinetuneModule")
    pretrained = not is_untrained(_backbone_spec(check))
    if systems is None:
        systems = [s for s in SYSTEMS if s != "scratch" or pretrained]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"hnet_dna.finetune: --systems {' '.join(unknown)}: unknown; choose from {', '.join(SYSTEMS)}")
    if "scratch" in systems and not pretrained:
        raise SystemExit("hnet_dna.finetune: --systems scratch is the random-initialisation control of a pretrained "
                         "backbone, and the recipe's backbone is already random: drop it, or give --model.backbone")
    files = _data_files(dm.hparams)
    fingerprint = hashlib.sha256(json.dumps({
        "config": Path(config).read_text(), "overrides": overrides, "folds": folds,
        "data": {f: _sha256(Path(f)) for f in files},
    }, sort_keys=True).encode()).hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else None
    if previous is not None and previous.get("fingerprint") != fingerprint:
        raise SystemExit(
            f"hnet_dna.finetune: {results_path} holds results of another config, overrides, folds or data "
            f"(fingerprint {previous.get('fingerprint')} vs {fingerprint}); use another --out or remove it"
        )
    # What the runs of each system rest on beyond the config and data: model and probe on the
    # backbone's weights, scratch on its architecture; cnn and kmer_lr on neither. A rerun after
    # the backbone changed (a new default model, a retrained folder) redoes the runs it voids.
    from .commands import fingerprint as weights_fingerprint

    backbone = {"backbone_weights": weights_fingerprint(check.model.backbone)[:16],
                "backbone_config": hashlib.sha256(json.dumps(check.model.backbone.config.to_dict(), sort_keys=True)
                                                  .encode()).hexdigest()[:16]}
    runs = previous["runs"] if previous else []
    stale = set()
    if previous is not None:
        if previous.get("backbone_config") != backbone["backbone_config"]:
            stale |= {"model", "probe", "scratch"}
        elif previous.get("backbone_weights") != backbone["backbone_weights"]:
            stale |= {"model", "probe"}
        stale &= {r["system"] for r in runs}
    if stale:
        print(f"hnet_dna.finetune: the backbone differs from the one {results_path} was run with: redoing "
              f"{', '.join(sorted(stale))}", file=sys.stderr, flush=True)
        runs = [r for r in runs if r["system"] not in stale]
        for system in stale & {"model", "scratch"}:
            shutil.rmtree(out / "runs" / system, ignore_errors=True)
    split_sizes: dict = previous["split_sizes"] if previous else {}
    done = {(r["system"], r.get("fold"), r["seed"]) for r in runs}
    result = previous

    def save() -> dict:
        summary = _summary(runs)
        return {
            "fingerprint": fingerprint, **backbone, "config": config, "overrides": overrides, "data_files": files,
            "class_names": dm.class_names, "seeds": sorted({r["seed"] for r in runs}), "folds": folds,
            "systems": [s for s in SYSTEMS if s in {r["system"] for r in runs}], "split_sizes": split_sizes,
            "runs": sorted(runs, key=lambda r: (r["system"], r.get("fold") or 0, r["seed"])),
            "summary": summary, "winners": winners(summary),
        }

    for fold in fold_list:
        todo = [(system, seed) for seed in seeds for system in systems if (system, fold, seed) not in done]
        if not todo:
            continue
        data = dm if fold == fold_list[0] else _build_cli([*cli_args, *fold_args(fold)]).datamodule
        sizes = {s: len(data.datasets[s]) for s in ("train", "val", "test")}
        if fold is None:
            split_sizes = sizes
        else:
            split_sizes[f"fold{fold}"] = sizes
        # probe and kmer_lr: one fit per split, also across a resumed run
        features, deterministic = None, {r["system"]: r for r in runs if r["system"] in ("probe", "kmer_lr") and r.get("fold") == fold}
        where = "" if fold is None else f"fold {fold}, "
        for system, seed in todo:
            print(f"hnet_dna.finetune: {where}seed {seed}: {system}", file=sys.stderr, flush=True)
            if system in ("model", "scratch", "cnn"):
                name = f"{system}/" + ("" if fold is None else f"fold{fold}-") + f"seed{seed}"
                run = _trained_run(system, [*cli_args, *fold_args(fold)], seed, fold, out / "runs" / name)
            elif system in deterministic:  # the same fit for every seed: fitted once per split
                run = {**deterministic[system], "seed": seed}
            elif system == "probe":
                if features is None:
                    features = probe_features(check.model.backbone, data, check.model.hparams.pooling)
                run = deterministic[system] = _probe_run(features, data, seed, fold)
            else:
                run = deterministic[system] = _kmer_run(data, seed, fold)
            runs.append(run)
            result = save()
            _atomic_write(results_path, json.dumps(result, indent=2) + "\n")  # after every run: resumable
    result = result if result is not None else save()
    table = _table(result["summary"])
    per_fold = result["split_sizes"] if folds else {"all": result["split_sizes"]}
    sizes = "; ".join(f"{k}: " + ", ".join(f"{s} {n:,}" for s, n in v.items()) for k, v in per_fold.items())
    over = f"folds x seeds ({folds} x {len(result['seeds'])})" if folds else "seeds"
    _atomic_write(out / "results.md", f"# {Path(config).name}: test metrics over seeds {result['seeds']}"
                  + (f", {folds} folds" if folds else "") + "\n\n"
                  f"Splits: {sizes}; classes: {', '.join(dm.class_names)}. Mean ± sd (ddof 1) over {over}; "
                  f"probe and kmer_lr are deterministic given a split.\n\n{table}\n\n{_winner_lines(result['summary'])}\n")
    print(table)
    print(_winner_lines(result["summary"]))
    return result


def main(argv: list[str] | None = None) -> None:
    from .commands import closing_process_group, exit_on_user_error

    parser = argparse.ArgumentParser(prog="python -m hnet_dna.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a fine-tuning recipe (pipelines/finetune/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and the runs")
    parser.add_argument("--folds", type=int, default=0,
                        help="cross-validate with K stratified folds (sets without a given test split); 0: the recipe's split")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=None,
                        help="the systems to run (default: all; scratch only for a pretrained backbone)")
    args, overrides = parser.parse_known_args(argv)
    if args.folds == 1 or args.folds < 0:
        parser.error("--folds must be 0 or >= 2")
    with closing_process_group():
        exit_on_user_error(lambda: run_protocol(args.config, overrides, args.seeds, args.out, args.folds, args.systems),
                           prog="hnet_dna.finetune")


if __name__ == "__main__":
    main()
