"""The study configuration: composing it with Hydra, its schema, validation and numerics profiles."""
