"""Evaluation: zero-shot, retrieval, probes, metrics with bootstrap CIs."""
