"""Many runs as one model: a sweep's jobs that differ only in ``init`` and ``seed``, trained together.

``hydra/launcher=stacked`` (hydra_plugins.initstudy_stacked) groups such jobs (:mod:`.grouping`), stacks their
networks along a leading model axis (:mod:`.network`), serves each member its own seeded batches
(:mod:`.data`), and trains them in one LightningModule (:mod:`.module`) driven by one Trainer
(:mod:`.fit`), while each member keeps a single run's record (:mod:`.members`) and run folder
(:mod:`.run`, through the runner's own bookkeeping). On the CPU with the portable profile a member's results
are its single run's, bit for bit (tests/test_stacked.py).
"""
