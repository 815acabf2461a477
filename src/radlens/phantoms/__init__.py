"""Built-in phantom datasets with known ground truth: physics-based brain MRI and chest CT."""
