"""Exporters: write prepared datasets back in the layouts of MR-CLIP and M3D."""
