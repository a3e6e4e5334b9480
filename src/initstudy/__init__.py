"""initstudy: how weight initialization shapes the training of MLPs on MNIST.

Stages (each a ``python -m`` entry point; ``dvc.yaml`` wires them together and names what each reads):

- ``initstudy.data``      download and verify MNIST                          (stage download)
- ``initstudy.train``     train one run, or a Hydra multirun sweep, into run folders and MLflow
                          (stages train, train_depth)
- ``initstudy.diagnose``  signal propagation at step 0, measured and predicted  (diagnose, diagnose_depth)
- ``initstudy.report``    aggregate a sweep into tables, statistics and figures (report, report_depth)

Outside the pipeline: ``initstudy.tracking.importer`` (log run folders trained offline into MLflow) and
``initstudy.runs.clean`` (``make clean``).
"""

__version__ = "0.1.0"
