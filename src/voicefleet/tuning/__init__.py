"""Hyperparameter sweeps over fine-tuning with Ray Tune + Optuna."""
