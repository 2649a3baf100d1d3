"""Comparisons of approximate token sums that are either certain or refused.

ThunderAgent's control step compares float sums of KV demand against limits
and against each other. The reference way to get those sums is to add every
program up, in the view's order, on every call; the policy's index keeps them
incrementally instead, so its sums differ from the reference's in the last
bits. Each approximate value therefore travels with an error bound (tokens):
the reference's float is within ``error`` of it. An error of exactly 0 means
the value *is* the reference's float, bit for bit (the same operations in the
same order), and comparisons are then the plain float ones.

``compare`` answers only when the bounds make the answer certain; otherwise it
raises ``Uncertain`` and the caller recomputes the step exactly. Ties between
two inexact values are never certain (the exact path breaks them).
"""

from __future__ import annotations

# Four units in the last place of a double: one rounding on each side (the
# reference's and ours), doubled for safety.
ROUNDING = 2.0 ** -51


class Uncertain(Exception):
    """An approximate comparison is too close to call: use the exact path."""


def compare(a: float, a_error: float, b: float, b_error: float) -> int:
    """Sign of (a - b) for the exact values behind ``a`` and ``b``: -1, 0 or 1.

    0 is answered only when both are exact and equal."""
    if not (a_error or b_error):
        return (a > b) - (a < b)
    margin = a_error + b_error + ROUNDING * (abs(a) + abs(b))
    difference = a - b
    if difference > margin:
        return 1
    if difference < -margin:
        return -1
    raise Uncertain


def rounded(error: float, value: float) -> float:
    """``error`` after one more float operation that produced ``value`` (exact stays exact)."""
    return error + ROUNDING * abs(value) if error else 0.0
