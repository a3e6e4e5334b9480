"""A sweep as Hydra runs it: its jobs and where they land, and the pre-flight that checks them all."""
