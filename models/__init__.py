"""Flax linen models: one file per model family, each exporting `Model` (see DESIGN.md)."""
