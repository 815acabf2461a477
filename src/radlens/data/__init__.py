"""Reading prepared datasets: tables, memory-mapped arrays, torch datasets, augmentation, samplers."""
