"""Data: ShapesWorld (procedural scenes, `vgt.data.shapes`) and loaders for real image-text data."""
