"""Analysis of trained models: per-layer modality probing (`mmedge probe`)."""
