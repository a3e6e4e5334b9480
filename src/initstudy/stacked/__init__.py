"""Launching a sweep's jobs as stacked groups: ``hydra/launcher=stacked`` (hydra_plugins.initstudy_stacked).

This package decides *which* jobs train together and *where* they run: :mod:`.grouping` plans units (jobs whose
configs differ only in ``init`` and ``seed`` form one group), :mod:`.launcher` runs the plan in job order, each
unit through Hydra's ``run_job``, and :mod:`.workers` runs units in worker processes (one per core). *How* a group trains (the stacked network, batches, module and fit) belongs to
:mod:`initstudy.train`. On the CPU with the portable profile a member's results are its single run's, bit for
bit (tests/test_stacked.py).
"""
