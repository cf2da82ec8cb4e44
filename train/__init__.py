"""Training, evaluation, ablation and fine-tuning scripts (run as `python train/<script>.py`)."""
