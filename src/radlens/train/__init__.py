"""The Lightning-based training engine and one LightningModule per task."""
