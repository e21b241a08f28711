"""vgt: Visual Generation Tuning — turn a pretrained vision-language model into a text-to-image generator."""

__version__ = "0.1.0"
