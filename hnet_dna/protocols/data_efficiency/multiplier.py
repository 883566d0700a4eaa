"""The data multiplier: how many times fewer training bases an H-Net needed to reach a baseline's
final held-out bits per base. Pure arithmetic on curves, no model or file in sight.

A curve is ``[(bases_seen, bits_per_base), ...]`` at the benchmark's log-spaced points. The
target is the baseline's value at its last point, ``B`` bases in. The H-Net needed ``b*`` bases:

* ``sustained`` (the headline): from ``b*`` on, the H-Net's curve stays at or below the target.
  ``b*`` is where it comes down for the last time: between its last point above the target and the
  next point, interpolated linearly in log(bases). A noisy dip that rises again does not count.
* ``first`` (kept beside it as ``first_crossing_per_seed``): the first point at or below the
  target, interpolated the same way from the point before. Optimistic when a curve is noisy.

Either way the multiplier is ``B / b*``; ``None`` when the H-Net is above the target at its last
point (``sustained``) or at every point (``first``): nothing is extrapolated. When the H-Net is
already at or below the target at its first point, ``b*`` is that point's bases and the multiplier
is a lower bound. A NaN point (a diverged evaluation) counts as above the target; when the point
just before the crossing is NaN there is nothing to interpolate from, and ``b*`` is the crossing
point's own bases (the smaller, safe multiplier). The result is never NaN.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["data_multiplier", "multiplier_summary", "RULES"]

RULES = ("sustained", "first")


def _log_interpolate(above: tuple[float, float], below: tuple[float, float], target: float) -> float:
    """Bases where the segment from ``above`` (bits > target) to ``below`` (bits <= target) meets
    the target, linear in log(bases)."""
    (b0, y0), (b1, y1) = above, below
    frac = (y0 - target) / (y0 - y1)
    return math.exp(math.log(b0) + frac * (math.log(b1) - math.log(b0)))


def data_multiplier(
    hnet: list[tuple[float, float]], baseline: list[tuple[float, float]], rule: str = "sustained"
) -> float | None:
    """How many times fewer bases the H-Net needed to reach the baseline's final bits per base.

    Args:
        hnet, baseline: curves ``[(bases_seen, bits_per_base), ...]`` (any order).
        rule: ``sustained`` (stays at or below the target from the crossing on) or ``first``
            (the first crossing).

    Returns ``B / b*`` (see the module docstring), or None when the target is not reached.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if not hnet or not baseline:
        return None
    hnet = sorted(hnet)
    final_bases, target = sorted(baseline)[-1]
    i = _crossing(hnet, target, rule)
    if i is None:
        return None
    if i == 0 or not math.isfinite(hnet[i - 1][1]):  # the first point, or after a NaN point
        needed = hnet[i][0]
    else:
        needed = _log_interpolate(hnet[i - 1], hnet[i], target)
    return final_bases / needed


def _crossing(hnet: list[tuple[float, float]], target: float, rule: str) -> int | None:
    """The index of the H-Net's (sorted) point where it reaches ``target`` by ``rule``; None when
    it does not (or the target is not finite: a diverged baseline sets none)."""
    if not math.isfinite(target):
        return None
    above = [i for i, (_, bits) in enumerate(hnet) if not bits <= target]  # a NaN point is above
    if rule == "first":
        reached = [i for i, (_, bits) in enumerate(hnet) if bits <= target]
        return reached[0] if reached else None
    if above and above[-1] == len(hnet) - 1:
        return None  # above the target at its last point
    return above[-1] + 1 if above else 0


def multiplier_is_lower_bound(
    hnet: list[tuple[float, float]], baseline: list[tuple[float, float]], rule: str = "sustained"
) -> bool:
    """True when the multiplier is a lower bound: the crossing is at the H-Net's first point (the
    curve starts too late to see it: ``sustained``, every point is at or below the baseline's final
    value; ``first``, the first point is), or right after a NaN point (``b*`` is then the crossing
    point's own bases, see the module docstring)."""
    if not hnet or not baseline:
        return False
    hnet = sorted(hnet)
    i = _crossing(hnet, sorted(baseline)[-1][1], rule)
    return i is not None and (i == 0 or not math.isfinite(hnet[i - 1][1]))


def multiplier_summary(
    per_seed: dict[int, float | None],
    lower_bound: dict[int, bool] | None = None,
    first_crossing: dict[int, float | None] | None = None,
) -> dict:
    """``{per_seed, mean, sd, reached, seeds_reached, lower_bound, first_crossing_per_seed}``.

    Mean and sample sd over seeds when every seed reached the target; otherwise both are None and
    ``reached`` is False. ``lower_bound`` (per seed, optional): that seed's H-Net was at the target
    at its first point; the summary's flag is True if any seed that reached it was.
    ``first_crossing`` (per seed, optional): the ``first`` rule's multipliers, reported as they are.
    """
    values = list(per_seed.values())
    reached = all(v is not None for v in values) and bool(values)
    mean = float(np.mean(values)) if reached else None
    sd = float(np.std(values, ddof=1)) if reached and len(values) > 1 else (0.0 if reached else None)
    out = {"per_seed": {str(k): v for k, v in per_seed.items()}, "mean": mean, "sd": sd, "reached": reached,
           "seeds_reached": sum(v is not None for v in values),
           "lower_bound": any((lower_bound or {}).get(k, False) and per_seed[k] is not None for k in per_seed)}
    if first_crossing is not None:
        out["first_crossing_per_seed"] = {str(k): v for k, v in first_crossing.items()}
    return out
