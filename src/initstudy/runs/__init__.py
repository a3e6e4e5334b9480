"""Run folders: ownership, staging, completion, identity, the manifest of a sweep, reading results."""
