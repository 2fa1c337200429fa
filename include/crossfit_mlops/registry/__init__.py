"""The model registry: challenger registration, the champion/challenger gate, rollback."""
