"""Order-k Markov models of DNA: the floor any language model must beat.

A model fitted on the training bases predicts base t from the k bases before it, with add-alpha
smoothing. Fitting counts every (j + 1)-mer made of A/C/G/T only, for every order j <= k.

Scoring covers exactly the targets a language model is scored on: every A/C/G/T position that
follows another position of its sequence (the first position has no context; N, padding and
special ids are never targets). Where fewer than k bases precede a target (near the start, or
just after an N) the context backs off to the bases there are, down to order 0, so that model and
Markov baseline are compared on the same positions.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MarkovModel", "TwoSidedMarkovModel", "markov_bits_per_base", "kmer_logistic_regression", "kmer_predict_proba", "linear_probe"]


def _windows(ids: np.ndarray, order: int, base_ids: tuple[int, ...]):
    """Codes of every (order + 1)-window made of bases only: context * 4 + next base."""
    digits = _digits(ids, base_ids)
    n = len(ids) - order
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    code = np.zeros(n, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for i in range(order + 1):
        d = digits[i : i + n]
        valid &= d >= 0
        code = code * 4 + np.maximum(d, 0)
    return code[valid]


def _digits(ids: np.ndarray, base_ids: tuple[int, ...]) -> np.ndarray:
    """0..3 for A/C/G/T ids, -1 for anything else."""
    lookup = np.full(max(256, int(ids.max(initial=0)) + 1), -1, dtype=np.int64)
    lookup[list(base_ids)] = np.arange(4)
    return lookup[ids]


class MarkovModel:
    """Order-k Markov chain over A/C/G/T ids, backing off to shorter contexts where a target has
    fewer than k bases before it.

    Args:
        order: context length k (0 = base frequencies).
        alpha: add-alpha smoothing of the counts.
        base_ids: the ids of A, C, G, T (the nucleotide tokenizer's by default).
    """

    def __init__(self, order: int, alpha: float = 1.0, base_ids: tuple[int, ...] = (0, 1, 2, 3)):
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        self.order, self.alpha, self.base_ids = order, alpha, tuple(base_ids)
        self.counts = [np.zeros(4 ** (j + 1)) for j in range(order + 1)]  # per order j <= k

    def fit(self, sequences) -> "MarkovModel":
        """Count (j + 1)-mers from scratch. sequences: one id tensor/array, or an iterable of
        them (consumed once, so a generator keeps memory flat on a whole genome)."""
        for c in self.counts:
            c[:] = 0
        return self.update(sequences)

    def update(self, sequences) -> "MarkovModel":
        """Add the (j + 1)-mers of more sequences to the counts."""
        for ids in _as_list(sequences):
            for j, c in enumerate(self.counts):
                c += np.bincount(_windows(ids, j, self.base_ids), minlength=c.size)
        return self

    def log2_probs(self, order: int | None = None) -> np.ndarray:
        """log2 p(next | context) for every (order + 1)-mer code (context * 4 + next)."""
        smoothed = self.counts[self.order if order is None else order].reshape(-1, 4) + self.alpha
        return np.log2(smoothed / smoothed.sum(-1, keepdims=True)).reshape(-1)

    def score(self, sequences) -> tuple[float, int]:
        """(total bits, number of targets) over every A/C/G/T position after the first of each
        sequence: the targets a language model is scored on."""
        if not self.counts[0].any():
            raise RuntimeError("fit the model on some sequence first")
        tables = [self.log2_probs(j) for j in range(self.order + 1)]
        total, n = 0.0, 0
        for ids in _as_list(sequences):
            d = _digits(ids, self.base_ids)
            t = np.flatnonzero(d >= 0)
            t = t[t >= 1]  # the first position has no context
            if not t.size:
                continue
            position = np.arange(len(d))
            last_other = np.maximum.accumulate(np.where(d < 0, position, -1))  # last non-base at or before i
            clean = t - 1 - last_other[t - 1]  # bases right before each target
            context = np.minimum(clean, self.order)
            for j in range(self.order + 1):
                tj = t[context == j]
                code = np.zeros(tj.size, dtype=np.int64)
                for i in range(j, -1, -1):  # context bases oldest first, then the target
                    code = code * 4 + d[tj - i]
                total -= float(tables[j][code].sum())
            n += t.size
        return total, n

    def bits_per_base(self, sequences) -> float:
        """Mean -log2 p(base | up to k previous bases) over the targets of :meth:`score`."""
        total, n = self.score(sequences)
        return total / max(n, 1)


class TwoSidedMarkovModel:
    """p(base | k bases before it, k bases after it): the masked-LM counterpart of
    :class:`MarkovModel`, for the held-out report of a masked LM.

    Fitted on plain training windows ((2k + 1)-mers of bases); scored on masked windows, where it
    sees what the masked LM sees: the context is the *masked* input, so a target whose k-neighbourhood
    holds a ``<mask>``, an N or the window's edge backs off to the largest symmetric j < k whose
    2j neighbours are all visible bases (j = 0: base frequencies).

    Args:
        order: bases k on each side (0 = base frequencies).
        alpha: add-alpha smoothing of the counts.
        base_ids: the ids of A, C, G, T.
    """

    MAX_ORDER = 5

    def __init__(self, order: int, alpha: float = 1.0, base_ids: tuple[int, ...] = (0, 1, 2, 3)):
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        if order > self.MAX_ORDER:
            raise ValueError(f"order {order}: a two-sided model keeps 4^(2k+1) counts; at most {self.MAX_ORDER} bases "
                             "each side (4^11 counts)")
        self.order, self.alpha, self.base_ids = order, alpha, tuple(base_ids)
        self.counts = [np.zeros(4 ** (2 * j + 1)) for j in range(order + 1)]  # context codes * 4 + centre

    @staticmethod
    def _codes(d: np.ndarray, t: np.ndarray, j: int, centre: np.ndarray) -> np.ndarray:
        code = np.zeros(t.size, dtype=np.int64)
        for i in [*range(-j, 0), *range(1, j + 1)]:  # left neighbours, oldest first, then right ones
            code = code * 4 + d[t + i]
        return code * 4 + centre

    def update(self, sequences) -> "TwoSidedMarkovModel":
        """Add the (2j + 1)-mers of more plain sequences to the counts."""
        for ids in _as_list(sequences):
            d = _digits(ids, self.base_ids)
            for j, c in enumerate(self.counts):
                t = np.arange(j, len(d) - j)
                ok = np.ones(t.size, dtype=bool)
                for i in range(-j, j + 1):
                    ok &= d[t + i] >= 0
                t = t[ok]
                c += np.bincount(self._codes(d, t, j, d[t]), minlength=c.size)
        return self

    def fit(self, sequences) -> "TwoSidedMarkovModel":
        for c in self.counts:
            c[:] = 0
        return self.update(sequences)

    def score(self, masked_windows) -> tuple[float, int]:
        """(total bits, number of targets) over ``(input ids, labels)`` pairs: every position whose
        label is A/C/G/T, given the visible bases around it in the input."""
        if not self.counts[0].any():
            raise RuntimeError("fit the model on some sequence first")
        tables = []
        for c in self.counts:
            smoothed = c.reshape(-1, 4) + self.alpha
            tables.append(np.log2(smoothed / smoothed.sum(-1, keepdims=True)).reshape(-1))
        total, n = 0.0, 0
        for inputs, labels in masked_windows:
            d = _digits(np.asarray(inputs, dtype=np.int64), self.base_ids)
            target = _digits(np.asarray(labels, dtype=np.int64).clip(min=0), self.base_ids)
            target[np.asarray(labels) < 0] = -1
            t = np.flatnonzero(target >= 0)
            if not t.size:
                continue
            visible = d >= 0
            # visible bases right before / after each position: runs of True, counted outward
            pos = np.arange(len(d))
            last_hidden = np.maximum.accumulate(np.where(~visible, pos, -1))
            next_hidden = np.minimum.accumulate(np.where(~visible, pos, len(d))[::-1])[::-1]
            left = np.where(t > 0, t - 1 - last_hidden[np.maximum(t - 1, 0)], 0)
            right = np.where(t < len(d) - 1, next_hidden[np.minimum(t + 1, len(d) - 1)] - t - 1, 0)
            order = np.minimum(np.minimum(left, right), self.order)
            for j in range(self.order + 1):
                tj = t[order == j]
                total -= float(tables[j][self._codes(d, tj, j, target[tj])].sum())
            n += t.size
        return total, n


def markov_bits_per_base(train, test, order: int, alpha: float = 1.0, base_ids=(0, 1, 2, 3)) -> float:
    """Fit an order-``order`` Markov model on ``train`` ids and score ``test`` ids (bits per base)."""
    return MarkovModel(order, alpha, base_ids).fit(train).bits_per_base(test)


def _as_list(sequences):
    """One sequence or an iterable of them, as int64 arrays (lazily)."""
    if isinstance(sequences, (torch.Tensor, np.ndarray)) and sequences.ndim == 1:
        sequences = [sequences]
    for s in sequences:
        yield np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s, dtype=np.int64)


# ------------------------------------------------------------------------------ k-mer classifier
KMER_SIZES = (3, 4, 5, 6)
KMER_CS = (0.001, 0.01, 0.1, 1.0, 10.0)


def _kmer_features(sequences, k: int, vocabulary=None, strand_symmetric: bool = False):
    """k-mer frequencies of each sequence, rows normalised to sum 1; with ``strand_symmetric``
    counted over the sequence and its reverse complement together (a k-mer and its reverse
    complement then weigh alike: right where a sequence and its reverse complement share a label,
    wrong for strand-specific labels such as splice sites or TSS-oriented promoters). Returns
    (sparse matrix, vocabulary)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    complement = str.maketrans("ACGTN", "TGCAN")
    texts = [s.upper() + (" " + s.upper().translate(complement)[::-1] if strand_symmetric else "") for s in sequences]
    vectorizer = CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False, vocabulary=vocabulary,
                                 token_pattern=None, dtype=np.float64)
    counts = vectorizer.fit_transform(texts) if vocabulary is None else vectorizer.transform(texts)
    # k-mers spanning the separator or holding N are not features
    keep = [i for i, kmer in enumerate(vectorizer.get_feature_names_out()) if set(kmer) <= set("ACGT")]
    vocab = [vectorizer.get_feature_names_out()[i] for i in keep]
    return normalize(counts[:, keep], norm="l1"), vocab


def kmer_logistic_regression(train, val, num_classes: int, ks=KMER_SIZES, Cs=KMER_CS, seed: int = 0,
                             strand_symmetric: bool = False) -> dict:
    """The reference row every fine-tuning table carries: logistic regression on k-mer
    frequencies (scikit-learn), with k and C chosen on the validation split by MCC.

    train, val: (sequences, labels) with labels class indices. ``strand_symmetric``: the data's
    strand policy (k-mers counted on both strands; see :func:`_kmer_features`). Returns ``{"k",
    "C", "val_mcc", "model", "vocabulary", "strand_symmetric"}``; :func:`kmer_predict_proba`
    applies the fitted model.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import matthews_corrcoef

    best = None
    for k in ks:
        x_train, vocab = _kmer_features(train[0], k, strand_symmetric=strand_symmetric)
        x_val, _ = _kmer_features(val[0], k, vocabulary=_full_vocabulary(vocab), strand_symmetric=strand_symmetric)
        for C in Cs:
            model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
            model.fit(x_train * 100, train[1])  # frequencies scaled to percent: C acts on a sane range
            mcc = matthews_corrcoef(val[1], model.predict(x_val * 100))
            if best is None or mcc > best["val_mcc"]:
                best = {"k": k, "C": C, "val_mcc": float(mcc), "model": model, "vocabulary": vocab,
                        "strand_symmetric": strand_symmetric}
    return best


def _full_vocabulary(vocab):
    """The fitted k-mers as a CountVectorizer vocabulary (k-mers unseen in training are dropped)."""
    return {kmer: i for i, kmer in enumerate(vocab)}


def kmer_predict_proba(fitted: dict, sequences) -> np.ndarray:
    """Class probabilities (N, C) of a model from :func:`kmer_logistic_regression`."""
    x, _ = _kmer_features(sequences, fitted["k"], vocabulary=_full_vocabulary(fitted["vocabulary"]),
                          strand_symmetric=fitted["strand_symmetric"])
    return fitted["model"].predict_proba(x * 100)


# ------------------------------------------------------------------------------ linear probe
PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0)


def linear_probe(train, val, Cs=PROBE_CS, seed: int = 0) -> dict:
    """Logistic regression on fixed features (a frozen backbone's pooled embeddings), standardised
    on the training rows, with C chosen on the validation split by MCC.

    train, val: (features (N, D), labels (N,)). Returns ``{"C", "val_mcc", "model"}``; the model
    (a scikit-learn pipeline) gives ``predict_proba`` on new features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import matthews_corrcoef
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for C in Cs:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))
        model.fit(train[0], train[1])
        mcc = matthews_corrcoef(val[1], model.predict(val[0]))
        if best is None or mcc > best["val_mcc"]:
            best = {"C": C, "val_mcc": float(mcc), "model": model}
    return best
