"""Fine-tuning one stage (SoVITS or GPT) on Ray Train: `api.train_stage` drives a `TorchTrainer`
whose workers run `worker.train_loop_per_worker`."""
