"""The program-aware schedulers: the default ``thunder`` policy and the paper's ``thunder-paper``.

* ``default``: ``DefaultThunderPolicy`` (reservation for growth, learned tool decay, min-cost
  pauses, aging, rollout groups), with ``history`` (what it learns between steps, through
  ``estimates``: output and tool-time quantiles), ``ledger`` (one backend's counted demand in
  a step) and ``pause_set`` (the Eq. 9 choice of which programs to pause);
* ``paper``: ``ProgramAwarePolicy``, the paper's rules exactly, with ``paper_rules`` (its
  config and orderings), ``index`` (per-backend demand and the queue kept between calls),
  ``steps`` (one control step from the index or from the whole view) and ``certify``
  (when the index's approximate sums are certain enough to act on);
* shared: ``demand`` (Eq. 6-7 KV demand with the decay f(t) = x^-t), ``running_demand``
  (the same kept incrementally), ``placement`` (restore targets, best fit, route rule).
"""
