"""``python -m initstudy.train``: one run, or ``--multirun`` a sweep (Hydra), each logged to MLflow.

Hydra parses the command line, composes the config and runs the sweeper and launcher it is given; the
pre-flight (numerics environment, every job validated, destinations, store, lock, manifest, MLflow parent
run) is a Hydra callback registered in ``conf/hydra/study.yaml`` (:mod:`initstudy.sweep.preflight`). This module is
the job, and a thin :func:`main` that answers ``--help`` from the configs alone and turns a refusal into one
line on stderr and exit status 2.

    python -m initstudy.train                                   # one run: params.yaml as it is
    python -m initstudy.train init=he_uniform seed=3            # one run, overridden
    python -m initstudy.train --multirun                        # the default sweep (params.yaml)
    python -m initstudy.train -m init=zeros,he_uniform seed=0,1 hydra.sweep.dir=runs_try
    python -m initstudy.train -m hydra/launcher=stacked         # jobs equal but for init, seed: one model
    python -m initstudy.train -m optimizer.lr=0.001,0.003       # runs/optimizer.lr=0.001/<init>/seed_<n>
    python -m initstudy.train -m hydra/sweeper=tune init=he_uniform seed=0 'optimizer.lr=tag(log,interval(1e-4,1e-1))'
"""

from __future__ import annotations

from omegaconf import DictConfig

from initstudy.core import collector, signals


def hydra_job(cfg: DictConfig) -> float | None:
    """One Hydra job: train in the run folder's staging folder, promoted into Hydra's output folder once
    complete. Returns the job's objective (initstudy.train.fit). (``hydra/launcher=stacked`` runs
    ``fit.job_spec`` per job and trains the jobs it can group together: initstudy.stacked.) A job process (loky,
    SLURM) imports torch and Lightning here, so the collector pauses first (initstudy.core.collector)."""
    # In a job process of its own (SLURM, loky) a stop signal ends the job with 128 + its number, its run
    # KILLED; inside the launching process (basic launcher) the entry point's handling is already in place.
    with signals.stopping_exits("initstudy.train job"), collector.start_up():
        from initstudy.train.fit import job_spec, objective, train_run

        spec = job_spec(cfg)
        return objective(
            train_run(cfg, spec.final, spec.staging, spec.identity, spec.job_index, spec.position)
        )
