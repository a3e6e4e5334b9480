"""Signal propagation at step 0 for every network of a sweep, measured and predicted."""
