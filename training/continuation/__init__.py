"""Continuation training: model, trainer, export, comparison, data build."""
