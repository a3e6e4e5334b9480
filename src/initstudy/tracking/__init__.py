"""MLflow: the store, each run and sweep recorded in it, and the import of runs trained offline."""
