"""Training, evaluation, ablation and fine-tuning: scripts (`python train/<script>.py`) over one
library, train/lib.py."""
