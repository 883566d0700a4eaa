"""Embeddings of the default model: throughput on CPU, and a linear probe against the k-mer baseline.

    python benchmarks/embed_probe.py [--sets promoter_tss_chr20 enhancers_iEnhancer2L] [--model M]

For each labelled set, the splits are exactly those of its fine-tuning recipe
(``pipelines/finetune/<set>.yaml``: the file's split column, or the recipe's seeded split). Every
sequence is embedded once (``embed_sequences``, mean pooling, reverse-complement averaged; timed:
sequences and bases per second); a scikit-learn logistic regression on the standardised
embeddings, C chosen on validation by MCC, is tested on the test split, beside the k-mer logistic
regression of the fine-tuning protocol on the same splits. Metrics: torchmetrics on the whole test
split (as in fine-tuning). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from hnet_dna import embed_sequences
from hnet_dna.baselines import kmer_logistic_regression, kmer_predict_proba
from hnet_dna.data import LabelledDataModule
from hnet_dna.model.loading import load_model
from hnet_dna.tasks.finetune import classification_metrics

REPO = Path(__file__).resolve().parents[1]
CS = (0.001, 0.01, 0.1, 1.0, 10.0)


def test_metrics(probs: np.ndarray, labels, num_classes: int) -> dict:
    probs = torch.tensor(probs, dtype=torch.float32)
    metrics = classification_metrics(num_classes)
    for name, metric in metrics.items():
        metric.update(probs[:, 1] if probs.shape[1] == 2 and name == "auroc" else probs, torch.tensor(labels))
    return {k: float(v) for k, v in metrics.compute().items()}


def probe(train, val, test, num_classes: int, seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import matthews_corrcoef
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[0])
    best = None
    for C in CS:
        model = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(scaler.transform(train[0]), train[1])
        mcc = matthews_corrcoef(val[1], model.predict(scaler.transform(val[0])))
        if best is None or mcc > best[0]:
            best = (mcc, C, model)
    probs = best[2].predict_proba(scaler.transform(test[0]))
    return best[1], best[0], test_metrics(probs, test[1], num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["promoter_tss_chr20", "enhancers_iEnhancer2L"])
    parser.add_argument("--model", default=None, help="default: the shipped tiny chr20 model")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    model = load_model(args.model).eval()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    speed, quality = [], []
    for name in args.sets:
        recipe = yaml.safe_load((REPO / "pipelines" / "finetune" / f"{name}.yaml").read_text())
        init = recipe["data"]["init_args"]
        init = {k: (str(REPO / v) if k in ("train", "valid", "test") and isinstance(v, str) else v) for k, v in init.items()}
        dm = LabelledDataModule(**init)
        splits = {s: dm.datasets[s] for s in ("train", "val", "test")}
        seqs = {s: [r.sequence for r in ds.records] for s, ds in splits.items()}
        everything = [x for s in ("train", "val", "test") for x in seqs[s]]
        embed_sequences(everything[:64], model, batch_size=args.batch_size)  # warm-up
        t0 = time.perf_counter()
        vectors = embed_sequences(everything, model, batch_size=args.batch_size, rc_average=True)["embeddings"]
        seconds = time.perf_counter() - t0
        bases = sum(len(x) for x in everything)
        speed.append((name, len(everything), bases, seconds))
        cut = np.cumsum([len(seqs["train"]), len(seqs["val"])])
        x_train, x_val, x_test = np.split(vectors, cut)
        labels = {s: ds.labels for s, ds in splits.items()}
        k = len(dm.class_names)
        C, val_mcc, probe_test = probe((x_train, labels["train"]), (x_val, labels["val"]), (x_test, labels["test"]), k)
        fitted = kmer_logistic_regression((seqs["train"], labels["train"]), (seqs["val"], labels["val"]), k,
                                          strand_symmetric=dm.strand_symmetric)  # the set's strand policy
        kmer_test = test_metrics(kmer_predict_proba(fitted, seqs["test"]), labels["test"], k)
        sizes = "/".join(str(len(seqs[s])) for s in ("train", "val", "test"))
        quality.append((name, sizes, f"linear probe on embeddings (mean, RC-averaged; C {C})", val_mcc, probe_test))
        quality.append((name, sizes, f"k-mer logistic regression (k {fitted['k']}, C {fitted['C']})", fitted["val_mcc"], kmer_test))
    print("\n| set | sequences | bases | seconds | sequences/s | bases/s |\n|---|---|---|---|---|---|")
    for name, n, bases, seconds in speed:
        print(f"| {name} | {n:,} | {bases:,} | {seconds:.1f} | {n / seconds:,.0f} | {bases / seconds:,.0f} |")
    print("\n(each sequence is embedded on both strands: the model reads twice the bases shown)")
    print("\n| set | train/val/test | system | val MCC | test MCC | test AUROC | test accuracy |\n|---|---|---|---|---|---|---|")
    for name, sizes, system, val_mcc, m in quality:
        print(f"| {name} | {sizes} | {system} | {val_mcc:.3f} | {m['mcc']:.3f} | {m['auroc']:.3f} | {m['accuracy']:.3f} |")


if __name__ == "__main__":
    main()
