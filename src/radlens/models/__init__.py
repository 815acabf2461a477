"""Image and text encoders, CLIP/MoCo/MIL models, the architecture registry, and model bundles."""
