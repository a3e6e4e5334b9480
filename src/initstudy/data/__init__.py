"""MNIST: obtaining verified IDX files (``python -m initstudy.data``) and serving them to Lightning."""
