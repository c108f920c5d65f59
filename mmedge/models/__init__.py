"""Training-side models: config, attention variants, the adaptive encoder, checkpoints."""
