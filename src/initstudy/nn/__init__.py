"""The network, its initialization and the theory of its signal at step 0 (no Lightning here)."""
