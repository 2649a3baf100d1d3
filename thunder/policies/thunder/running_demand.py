"""One backend's counted KV demand, kept up to date across control steps.

``BackendDemand`` is built fresh for each step by adding every program, in
the view's order, which is what makes its float exact but costs a walk over
every program. ``RunningDemand`` is updated one program at a time as
programs change, and answers with an error bound instead:

* weight-1 programs (reasoning ones, or every one without decay) and shared
  prefixes are summed as integers: exact, so with no decaying program the
  answer is exactly the reference's float (error 0);
* decaying (acting) programs: sum c * x^-(now - t) equals
  x^-(now - T0) * sum c * x^(t - T0), so it keeps the second sum for a
  fixed origin T0 and scales it on use. The owner starts over (a new origin)
  before x^(now - T0) passes 2^HORIZON_BITS, far below float overflow.

A shared prefix whose holders disagree on its size makes the reference's
answer depend on the view's order; ``total`` then raises ``Uncertain``.
"""

from __future__ import annotations

from thunder.policies.thunder.certify import ROUNDING, Uncertain
from thunder.policies.thunder.demand import BackendDemand

HORIZON_BITS = 500.0


class RunningDemand:
    """Counted demand of one backend, kept across calls: an exact integer part
    (weight-1 programs and shared prefixes) plus a scaled decaying part."""

    __slots__ = ("count", "int_tokens", "scaled", "scaled_error", "decayed", "decayed_tokens",
                 "holders", "sizes", "shared", "conflicts", "version", "line", "line_version")

    def __init__(self) -> None:
        self.count = 0
        self.int_tokens = 0  # private tokens of weight-1 members (exact)
        self.scaled = 0.0  # sum of private * x^(t - T0) over decaying members
        self.scaled_error = 0.0  # rounding accumulated in ``scaled``
        self.decayed = 0  # decaying members
        self.decayed_tokens = 0  # their unweighted private tokens (for the error bound)
        self.holders: dict[tuple[str, int], int] = {}  # (prefix, shared_prefix_tokens) -> holders
        self.sizes: dict[str, int] = {}  # prefix -> how many different sizes its holders give it
        self.shared = 0  # sum of the sizes (the shared tokens when each prefix has one size)
        self.conflicts = 0  # prefixes whose holders disagree on its size
        self.version = 0  # changes with every change
        self.line = (0.0, 0.0, 0.0, 0.0)  # ``_fit_line()`` at ``line_version``
        self.line_version = 0

    def change(self, prefix: str | None, private_tokens: int, prefix_tokens: int, factor: float | None,
               sign: int) -> None:
        """Count (sign 1) or uncount (-1) a program split as ``split_tokens`` does;
        ``factor`` is x^(t - T0) if it decays, None if it weighs 1."""
        self.count += sign
        self.version += 1
        if factor is None:
            self.int_tokens += sign * private_tokens
        else:
            self.decayed += sign
            self.decayed_tokens += sign * private_tokens
            if self.decayed:
                self.scaled += sign * (factor * private_tokens)
                self.scaled_error += ROUNDING * abs(self.scaled)
            else:  # no decaying member left: the sum is exactly 0 again
                self.scaled = self.scaled_error = 0.0
        if prefix is not None:
            self._change_prefix(prefix, prefix_tokens, sign)

    def _change_prefix(self, prefix: str, tokens: int, sign: int) -> None:
        key = (prefix, tokens)
        holders = self.holders.get(key, 0) + sign
        if holders and holders != sign:  # the usual case: one more or one fewer holder
            self.holders[key] = holders
            return
        sizes = self.sizes.get(prefix, 0) + sign
        if holders:  # a first holder of this size
            self.holders[key] = holders
        else:
            del self.holders[key]
        if sizes:
            self.sizes[prefix] = sizes
        else:
            del self.sizes[prefix]
        self.shared += sign * tokens
        self.conflicts += (sizes > 1) - (sizes - sign > 1)

    def private(self, scale: float) -> tuple[float, float]:
        """(private tokens now, error bound); ``scale`` = x^-(now - T0)."""
        if not self.decayed:
            return float(self.int_tokens), 0.0
        _, decaying, fixed_error, decaying_error = self._line()
        return self.int_tokens + self.scaled * scale, fixed_error + decaying_error * scale

    def total(self, scale: float) -> tuple[float, float]:
        """(counted demand now, error bound): ``BackendDemand.total_tokens`` of the reference."""
        fixed, decaying, fixed_error, decaying_error = self._line()
        if not decaying_error:
            return fixed, 0.0  # every term weighs 1: exactly the reference's float
        total = fixed + decaying * scale
        return total, fixed_error + decaying_error * scale + ROUNDING * abs(total)

    def fixed_tokens(self) -> float:
        """The part of ``total`` that does not decay (weight-1 programs and shared prefixes)."""
        return self._line()[0]

    def _line(self) -> tuple[float, float, float, float]:
        if self.line_version != self.version:
            self.line, self.line_version = self._fit_line(), self.version
        return self.line

    def _fit_line(self) -> tuple[float, float, float, float]:
        """(a, b, c, d): total = a + b * scale within c + d * scale, for any scale
        while now - T0 stays within the horizon.

        Error sources, in units u = 2^-53 (ROUNDING is 4u): the reference
        rounds once per addition (at most count * total) and per weight (a few
        u per term, plus u * private tokens for the rounding of its exponent);
        ours, the same plus the exponent errors of x^(t - T0) and x^-(now - T0)
        (at most 2 * HORIZON_BITS * ln 2 u, about 700u, per decaying term) and
        the rounding collected in ``scaled_error``."""
        if self.conflicts:
            raise Uncertain  # which size counts depends on the view's order
        if not self.decayed:
            return float(self.int_tokens) + self.shared, 0.0, 0.0, 0.0
        fixed = self.int_tokens + self.shared
        fixed_error = ROUNDING * ((self.count + 4) * fixed + self.decayed_tokens) + 1e-300
        decaying_error = ROUNDING * (self.count + 200) * abs(self.scaled) + 2 * self.scaled_error + 1e-300
        return float(fixed), self.scaled, fixed_error, decaying_error

    def demand(self, capacity_tokens: int, shared_prefix_once: bool, scale: float) -> BackendDemand:
        """A ``BackendDemand`` to run pause or restore steps on."""
        if self.conflicts:
            raise Uncertain
        private, error = self.private(scale)
        holders = {prefix: count for (prefix, _), count in self.holders.items()}
        tokens = {prefix: size for prefix, size in self.holders}
        return BackendDemand.approximate(capacity_tokens, shared_prefix_once, self.count, private, error,
                                         holders, tokens)
