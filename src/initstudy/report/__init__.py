"""The report stage: from the run folders listed in the sweep manifest to tables, statistics and figures."""
