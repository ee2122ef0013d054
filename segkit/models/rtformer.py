"""Placeholder: filled in by the model family's issue."""
