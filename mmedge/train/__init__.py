"""Training: config, losses, FLOP accounting, distributed set-up, the trainer."""
