"""The classic papers reproduced side by side: one module per paper, their claims and verdicts."""
