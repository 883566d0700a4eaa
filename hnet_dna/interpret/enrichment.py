"""Do chunk boundaries fall at annotated feature edges more often than chance? Observed hits
against two controls that keep what could explain them otherwise.

A boundary within ``flank`` bases of an edge is a hit; bases in N runs never count. Controls,
``shifts`` draws each, with expected count, fold and one-sided p-values (1 + #draws with at least
as many hits) / (1 + draws), and ``p_depletion`` (at most as many):

* ``shift``: all boundaries moved by one random circular shift along the region's non-N bases
  (keeps their number and spacing; N runs are cut out, so no boundary lands in a gap);
* ``gc`` (the headline ``p_value``): each boundary moved to a random non-N base of the same
  ``control_window`` window whose local GC (:func:`local_gc`) is in the same decile (keeps local
  density and composition: enrichment that composition explains vanishes).
"""

from __future__ import annotations

import numpy as np

__all__ = ["local_gc", "boundary_enrichment"]

def local_gc(letters: str, flank: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(valid, gc): ``valid`` (L,) True at A/C/G/T (N runs and other letters False); ``gc`` (L,)
    the G+C fraction of the valid bases within ``flank`` bases either side (NaN where none)."""
    upper = np.frombuffer(letters.upper().encode(), dtype=np.uint8)
    valid = np.isin(upper, np.frombuffer(b"ACGT", dtype=np.uint8))
    strong = np.isin(upper, np.frombuffer(b"CG", dtype=np.uint8))
    def window_sum(x):
        c = np.concatenate([[0], np.cumsum(x, dtype=np.int64)])
        idx = np.arange(len(x))
        return c[np.minimum(idx + flank + 1, len(x))] - c[np.maximum(idx - flank, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        gc = window_sum(strong) / window_sum(valid)
    return valid, gc


def boundary_enrichment(boundaries: np.ndarray, edges: np.ndarray, start: int, end: int, *, flank: int = 2,
                        shifts: int = 1000, seed: int = 0, valid: np.ndarray | None = None,
                        gc: np.ndarray | None = None, control_window: int = 10_000, gc_bins: int = 10) -> dict:
    """Boundaries within ``flank`` bases of an edge, observed vs two controls (module docstring).

    ``valid`` (L,) marks the bases that count (False in N runs: no boundary there is counted and no
    control puts one there); ``gc`` (L,) each base's local G+C fraction (:func:`local_gc`), for the
    composition-matched control (skipped when None). ``p_value`` / ``p_depletion`` are the matched
    control's when it ran, else the shift control's."""
    length = end - start
    valid = np.ones(length, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    near = np.zeros(length, dtype=bool)
    for e in edges - start:
        near[max(0, e - flank):min(length, e + flank + 1)] = True
    local = boundaries - start
    local = local[valid[local]]  # a boundary in an N run is no boundary of the sequence
    observed = int(near[local].sum())
    places = np.flatnonzero(valid)  # (V,) the bases a control may move a boundary to
    near_at = near[places]  # (V,)
    rank = np.searchsorted(places, local)  # each boundary's index among the valid bases
    block = max(1, 20_000_000 // max(len(local), 1))  # draws per step: memory stays ~ 160 MB on a chromosome

    # Control 1: one circular shift of all boundaries along the valid bases (N runs cut out): keeps
    # the boundaries' number and spacing, not the sequence under them.
    rng = np.random.default_rng(seed)
    offsets = rng.integers(1, max(len(places), 2), size=shifts)
    shifted = np.concatenate([near_at[(rank[None, :] + offsets[k:k + block, None]) % len(places)].sum(1)
                              for k in range(0, shifts, block)])  # (shifts,)
    out = {"edges": int(len(edges)), "boundaries": int(len(local)), "observed": observed,
           **_control("shift", observed, shifted)}
    if gc is not None:
        # Control 2: each boundary moved to a random valid base of the same control_window-base
        # window and the same local-GC decile: keeps local density and composition, not spacing.
        g = np.asarray(gc)[places]
        cuts = np.nanquantile(g, np.linspace(0, 1, gc_bins + 1)[1:-1]) if np.isfinite(g).any() else np.array([])
        key = (places // control_window) * (gc_bins + 1) + np.searchsorted(cuts, np.nan_to_num(g, nan=-1.0), side="right")
        order = np.argsort(key, kind="stable")
        strata, first, size = np.unique(key[order], return_index=True, return_counts=True)
        k = np.searchsorted(strata, key[rank])
        lo, n = first[k], size[k]  # (B,) each boundary's stratum in near_at[order]
        near_sorted = near_at[order]
        rng = np.random.default_rng([seed, 1])
        matched = np.concatenate([near_sorted[lo + (rng.random((min(block, shifts - j), len(lo))) * n).astype(np.int64)].sum(1)
                                  for j in range(0, shifts, block)])
        out.update(_control("gc", observed, matched))
    headline = "gc" if gc is not None else "shift"
    out["p_value"], out["p_depletion"] = out[f"p_{headline}"], out[f"p_depletion_{headline}"]
    out["control"] = headline
    return out


def _control(name: str, observed: int, draws: np.ndarray) -> dict:
    expected = float(draws.mean())
    return {
        f"expected_{name}": expected,
        f"fold_{name}": observed / expected if expected > 0 else float("nan"),
        f"p_{name}": (1 + int((draws >= observed).sum())) / (1 + len(draws)),
        f"p_depletion_{name}": (1 + int((draws <= observed).sum())) / (1 + len(draws)),
    }

