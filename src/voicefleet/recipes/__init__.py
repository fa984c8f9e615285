"""End-to-end recipes composed from the components (data, training, tuning, serving)."""
