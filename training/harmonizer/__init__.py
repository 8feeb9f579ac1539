"""Harmonizer training: curricula, model, trainers, export, calibration, data build."""
