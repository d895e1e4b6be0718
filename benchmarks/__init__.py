"""Benchmarks that compare the app and the training pipeline against their usual baselines, in one run."""
