"""Grounded-scenes data: scene rendering, task generators, tokenizer, preprocessing (no torch)."""
