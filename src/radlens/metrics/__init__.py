"""Pure metric functions that training validation and evaluation both use (recall@K, AUROC, bootstrap)."""
