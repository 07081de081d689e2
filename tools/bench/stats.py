"""Pure statistics: percentiles, Prometheus-style histogram quantiles, ratios and rates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p90, p99 and max of a sample."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def bucket_delta(before: Mapping[float, float], after: Mapping[float, float]) -> dict[float, float]:
    """Cumulative bucket counts observed between two scrapes of one histogram."""
    return {le: after[le] - before.get(le, 0.0) for le in after}


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative `{le: count}` (q in 0..1).

    Linear within the bucket that holds the rank; a rank in the +Inf bucket answers the largest
    finite bound, as Prometheus does. None when the histogram is empty.
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound


def to_buckets(values: Iterable[float], bounds: Sequence[float]) -> dict[float, float]:
    """Raw samples as a cumulative histogram with the given upper bounds (+Inf added)."""
    data = list(values)
    result = {b: float(sum(1 for v in data if v <= b)) for b in bounds}
    result[math.inf] = float(len(data))
    return result


def per_second(times: Iterable[float], start: float, end: float) -> list[int]:
    """How many of `times` fall in each whole second of [start, end)."""
    width = max(1, math.ceil(end - start))
    counts = [0] * width
    for t in times:
        if start <= t < end:
            counts[min(width - 1, int(t - start))] += 1
    return counts


def steady_rate(times: Iterable[float]) -> float | None:
    """Events per second between the 10th and 90th percentile of their times.

    Robust to the ramp at both ends: the same sample offered at 100/s and answered with a
    steady latency gives about 100 for the send times and for the answer times.
    """
    data = sorted(times)
    low, high = percentile(data, 10), percentile(data, 90)
    if low is None or high is None or high <= low:
        return None
    inside = sum(1 for t in data if low <= t <= high)
    return (inside - 1) / (high - low)


def needed_burst(times: Sequence[float], rate: float) -> float:
    """The smallest bucket size for which `times` conform to a token bucket refilled at `rate`.

    Events i..j fit a (rate, burst) bucket when j - i + 1 <= burst + rate * (t_j - t_i).
    """
    data = sorted(times)
    best = 0.0
    for i, start in enumerate(data):
        for j in range(i, len(data)):
            best = max(best, (j - i + 1) - rate * (data[j] - start))
    return best


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any sliding window of `window` seconds."""
    data = sorted(times)
    best, low = 0, 0
    for high, t in enumerate(data):
        while t - data[low] >= window:
            low += 1
        best = max(best, high - low + 1)
    return best


def sustained_rate(
    steps: Sequence[Mapping[str, float | None]],
    *,
    latency_factor: float = 1.25,
    min_answered: float = 0.99,
    min_throughput: float = 0.9,
) -> float | None:
    """The highest offered rate before the first step where latency degrades; None if none held.

    A step holds when at least `min_answered` of its messages were answered, replies completed
    at `min_throughput` of the offered rate or better (both as `steady_rate`), and its p50 reply
    latency stayed within `latency_factor` times the lowest step's. Steps are taken in order of
    offered rate.
    """
    ordered = sorted(steps, key=lambda s: float(s["offered"] or 0.0))
    reference = next((s["reply_p50"] for s in ordered if s["reply_p50"] is not None), None)
    best: float | None = None
    for step in ordered:
        offered = float(step["offered"] or 0.0)
        achieved = step.get("offered_achieved") or offered
        answered = step["answered"] or 0.0
        throughput = step["throughput"] or 0.0
        latency = step["reply_p50"]
        holds = (
            answered >= min_answered
            and throughput >= min_throughput * achieved
            and latency is not None
            and reference is not None
            and latency <= latency_factor * reference
        )
        if not holds:
            break
        best = offered
    return best
