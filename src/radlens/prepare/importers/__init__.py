"""Importers: turn the layouts users have on disk (BIDS, DICOM, CT-RATE, M3D, CSV) into prepared datasets."""
