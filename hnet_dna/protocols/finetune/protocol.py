"""The fine-tuning protocol (:mod:`hnet_dna.finetune` for the command and what it writes): every
system on the same splits, seeds and budget; results written after every run, so that a rerun
continues, and refused when the config, overrides, budget, folds or data differ."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from ...cli import build_cli
from ...config import ConfigError
from ...model.loading import is_untrained
from ...runs import atomic_write_text, file_sha256, json_text
from ...runs import fingerprint as weights_fingerprint
from ...tasks.objectives import SELECTION_METRIC
from .budget import parse_budget
from .per_base_probe import per_base_probe_run
from .results import METRICS, SYSTEMS, results_table, segmentation_metrics, summarise, task_metrics, winner_lines, winners
from .systems import TRAINED, check_selection, kmer_run, probe_features, probe_run, system_args, trained_run
from .task_controls import task_kmer_run, task_probe_run

__all__ = ["run_protocol"]

def _data_files(hparams) -> list[str]:
    files = []
    fasta = hparams.get("fasta")  # a segmentation set: genome, BED splits, one file per element
    files += [str(fasta)] if isinstance(fasta, str) else [str(f) for f in fasta or []]
    files += [str(hparams[k]) for k in ("bed",) if hparams.get(k)]
    files += [str(v) for v in (hparams.get("annotation") or {}).values()]
    for key in ("train", "valid", "test"):
        value = hparams.get(key)
        if isinstance(value, dict):
            files += [str(v) for v in value.values()]
        elif value is not None:
            path = Path(value)
            files += [str(p) for p in sorted(path.rglob("*.txt"))] if path.is_dir() else [str(path)]
    return files


def _backbone_spec(cli) -> str | dict | None:
    return getattr(cli.model, "hparams", {}).get("backbone")


SEGMENTATION_SYSTEMS = ("model", "scratch", "cnn", "probe")  # per-base annotation (probe: per_base_probe)

ON_BACKBONE = ("model", "lpft", "lora", "probe")  # what rests on the backbone's weights (scratch: on its architecture)


def run_protocol(config: str, overrides: list[str], seeds: list[int], out: Path, folds: int = 0,
                 systems: list[str] | None = None, budget: str | None = None) -> dict:
    """Run (or continue) the protocol; returns what ``results.json`` holds. ``budget``:
    ``time:MINUTES``, ``epochs:N`` or ``flops:X`` for every trained system
    (:mod:`~hnet_dna.protocols.finetune.budget`); None: the recipe's trainer caps."""
    parsed_budget = parse_budget(budget)  # a typo fails before anything is read
    budget = None if parsed_budget is None else str(parsed_budget)
    cli_args = ["--config", config, *overrides]
    seeds = list(dict.fromkeys(seeds))  # a seed given twice is one run
    fold_list: list[int | None] = list(range(folds)) if folds else [None]

    def fold_args(fold):
        return [] if fold is None else ["--data.folds", str(folds), "--data.fold", str(fold)]

    check = build_cli([*cli_args, *fold_args(fold_list[0])])  # validates config and data before anything runs
    dm = check.datamodule
    if not hasattr(dm, "class_names"):
        raise SystemExit("hnet_dna.finetune: the config's data must be hnet_dna.data.LabelledDataModule")
    if not hasattr(check.model, "backbone"):
        raise SystemExit("hnet_dna.finetune: the config's model must be hnet_dna.tasks.FinetuneModule")
    segmentation = getattr(dm, "task", None) == "segmentation"
    if segmentation:
        unsupported = [s for s in systems or [] if s not in SEGMENTATION_SYSTEMS]
        if unsupported:
            raise ConfigError(f"hnet_dna.finetune: --systems {' '.join(unsupported)}: not for per-base annotation yet; "
                              f"choose from {', '.join(SEGMENTATION_SYSTEMS)}")
        systems = systems or [s for s in SEGMENTATION_SYSTEMS if s != "scratch" or not is_untrained(_backbone_spec(check))]
    task = getattr(dm, "task", "multiclass")
    per_sequence_outputs = task in ("multilabel", "regression")  # several outputs per sequence: no lpft yet
    if per_sequence_outputs and "lpft" in (systems or []):
        raise ConfigError(f"hnet_dna.finetune: --systems lpft: its probe-initialised head is for one class per sequence; "
                          f"a {task} set takes {', '.join(s for s in SYSTEMS if s != 'lpft')}")
    check_selection(check, f"--config {config}", "val/" + SELECTION_METRIC.get(task, "mcc"))  # before any run
    pretrained = not is_untrained(_backbone_spec(check))
    if systems is None:  # the controls of a pretrained backbone only where there is one
        systems = [s for s in SYSTEMS if (s not in ("scratch", "lpft", "lora") or pretrained)
                   and not (s == "lpft" and per_sequence_outputs)]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"hnet_dna.finetune: --systems {' '.join(unknown)}: unknown; choose from {', '.join(SYSTEMS)}")
    if "scratch" in systems and not pretrained:
        raise SystemExit("hnet_dna.finetune: --systems scratch is the random-initialisation control of a pretrained "
                         "backbone, and the recipe's backbone is already random: drop it, or give --model.backbone")
    files = _data_files(dm.hparams)
    fingerprint = hashlib.sha256(json.dumps({
        "config": Path(config).read_text(), "overrides": overrides, "folds": folds,
        "data": {f: file_sha256(Path(f)) for f in files}, **({"budget": budget} if budget else {}),
    }, sort_keys=True).encode()).hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else None
    if previous is not None and previous.get("budget") != budget:
        raise ConfigError(
            f"{results_path} holds runs under the budget {previous.get('budget') or 'of the recipe (no --budget)'}, and "
            f"this run asks for {budget or 'the recipe (no --budget)'}: runs under different budgets do not make one "
            "table; use another --out, or the same --budget")
    if previous is not None and previous.get("fingerprint") != fingerprint:
        raise SystemExit(
            f"hnet_dna.finetune: {results_path} holds results of another config, overrides, folds or data "
            f"(fingerprint {previous.get('fingerprint')} vs {fingerprint}); use another --out or remove it"
        )
    # What the runs of each system rest on beyond the config and data: model and probe on the
    # backbone's weights, scratch on its architecture; cnn and kmer_lr on neither. A rerun after
    # the backbone changed (a new default model, a retrained folder) redoes the runs it voids.
    backbone = {"backbone_weights": weights_fingerprint(check.model.backbone)[:16],
                "backbone_config": hashlib.sha256(json.dumps(check.model.backbone.config.to_dict(), sort_keys=True)
                                                  .encode()).hexdigest()[:16]}
    runs = previous["runs"] if previous else []
    stale = set()
    if previous is not None:
        if previous.get("backbone_config") != backbone["backbone_config"]:
            stale |= {*ON_BACKBONE, "scratch"}
        elif previous.get("backbone_weights") != backbone["backbone_weights"]:
            stale |= set(ON_BACKBONE)
        stale &= {r["system"] for r in runs}
    if stale:
        print(f"hnet_dna.finetune: the backbone differs from the one {results_path} was run with: redoing "
              f"{', '.join(sorted(stale))}", file=sys.stderr, flush=True)
    # Controls fitted before they followed the recipe (kmer_lr: both strands always; probe: 'last'
    # read as 'mean') carry no record of it, nor do runs from before the records of what each spent:
    # redone, not copied to new seeds.
    outdated = {r["system"] for r in runs if (r["system"] == "kmer_lr" and "strand_symmetric" not in r)
                or (r["system"] == "probe" and "pooling" not in r and "stride" not in r) or "wall_seconds" not in r} - stale
    if outdated:
        print(f"hnet_dna.finetune: {results_path} holds {', '.join(sorted(outdated))} fits from before they followed "
              "the recipe's strand policy and pooling, or recorded what they spent: redoing them", file=sys.stderr, flush=True)
        stale |= outdated
    if stale:
        runs = [r for r in runs if r["system"] not in stale]
        for system in stale & set(TRAINED):
            shutil.rmtree(out / "runs" / system, ignore_errors=True)
    split_sizes: dict = previous["split_sizes"] if previous else {}
    done = {(r["system"], r.get("fold"), r["seed"]) for r in runs}
    result = previous
    fractions = ({split: dict(zip(dm.class_names, dm.element_fractions(split))) for split in ("train", "val", "test")}
                 if segmentation else None)  # how often each element occurs where it is trained and judged

    def save() -> dict:
        summary = summarise(runs, segmentation_metrics(dm.class_names) if segmentation
                            else task_metrics(task, dm.class_names) if per_sequence_outputs else METRICS)
        return {
            "fingerprint": fingerprint, **backbone, "config": config, "overrides": overrides, "budget": budget,
            "data_files": files,
            "class_names": dm.class_names, "seeds": sorted({r["seed"] for r in runs}), "folds": folds,
            "systems": [s for s in SYSTEMS if s in {r["system"] for r in runs}], "split_sizes": split_sizes,
            **({"element_fractions": fractions} if fractions else {}),
            "runs": sorted(runs, key=lambda r: (r["system"], r.get("fold") or 0, r["seed"])),
            "summary": summary, "winners": winners(summary),
        }

    for fold in fold_list:
        todo = [(system, seed) for seed in seeds for system in systems if (system, fold, seed) not in done]
        if not todo:
            continue
        data = dm if fold == fold_list[0] else build_cli([*cli_args, *fold_args(fold)]).datamodule
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
            if system in TRAINED:
                name = f"{system}/" + ("" if fold is None else f"fold{fold}-") + f"seed{seed}"
                args = [*cli_args, *fold_args(fold), *system_args(system, check.model.hparams.lr)]
                run = trained_run(system, args, seed, fold, out / "runs" / name, parsed_budget)
            elif system in deterministic:  # the same fit for every seed: fitted once per split
                run = {**deterministic[system], "seed": seed}
            elif system == "probe" and segmentation:
                run = deterministic[system] = per_base_probe_run(check.model, data, fold, seed)
            elif system == "probe":
                if features is None:
                    start = time.perf_counter()
                    features = probe_features(check.model.backbone, data, check.model.hparams.pooling)
                    feature_seconds = time.perf_counter() - start
                backbone_parameters = sum(p.numel() for p in check.model.backbone.parameters())
                fit = task_probe_run if per_sequence_outputs else probe_run
                run = deterministic[system] = {**fit(features, data, seed, fold, backbone_parameters, feature_seconds),
                                               "pooling": check.model.hparams.pooling}
            else:
                run = deterministic[system] = (task_kmer_run if per_sequence_outputs else kmer_run)(data, seed, fold)
            runs.append(run)
            result = save()
            atomic_write_text(results_path, json_text(result))  # after every run: resumable; NaN as null
    result = result if result is not None else save()
    table = results_table(result["summary"])
    per_fold = result["split_sizes"] if folds else {"all": result["split_sizes"]}
    sizes = "; ".join(f"{k}: " + ", ".join(f"{s} {n:,}" for s, n in v.items()) for k, v in per_fold.items())
    over = f"folds x seeds ({folds} x {len(result['seeds'])})" if folds else "seeds"
    if fractions:
        sizes += "; bases inside each element (train / val / test): " + ", ".join(
            f"{e} " + " / ".join(f"{100 * fractions[s][e]:.2f} %" for s in ("train", "val", "test")) for e in dm.class_names)
    spent = ("Budget per trained run: " + (f"`{budget}`" if budget else "the recipe's trainer caps") + ". Spent: mean "
             "epochs, optimizer steps, training FLOPs (forward + backward, counted per step), wall seconds and "
             "trainable / total parameters per run.")
    atomic_write_text(out / "results.md", f"# {Path(config).name}: test metrics over seeds {result['seeds']}"
                  + (f", {folds} folds" if folds else "") + "\n\n"
                  f"Splits: {sizes}; classes: {', '.join(dm.class_names)}. Mean ± sd (ddof 1) over {over}; "
                  f"probe and kmer_lr are deterministic given a split. {spent}\n\n{table}\n\n"
                  f"{winner_lines(result['summary'])}\n")
    print(table)
    print(winner_lines(result["summary"]))
    return result

