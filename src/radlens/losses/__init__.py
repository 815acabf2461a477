"""Losses: CLIP/InfoNCE (local + gathered), multi-positive and soft targets."""
