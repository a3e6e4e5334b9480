"""initstudy: how weight initialization shapes the training of MLPs on MNIST.

Stages (each a ``python -m`` entry point, wired together by ``dvc.yaml``):

- ``initstudy.data``     download and verify MNIST
- ``initstudy.train``    train one run, or a Hydra multirun sweep, logging to MLflow
- ``initstudy.report``   aggregate the sweep into tables, statistics and figures
"""

__version__ = "0.1.0"
