"""mmedge: adaptive vision-language models for on-device inference."""

__version__ = "0.1.0"
