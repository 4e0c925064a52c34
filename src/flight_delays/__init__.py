"""Flight arrival-delay pipeline."""
