"""The authors' released VGT checkpoints (hustvl/VGT): reading their `.pth` files, mapping every key to vgt's
modules by a named rule, and writing a vgt pipeline folder. See docs/official.md."""

from vgt.official.convert import convert_official
from vgt.official.rules import ConversionError, ConversionReport

__all__ = ["ConversionError", "ConversionReport", "convert_official"]
