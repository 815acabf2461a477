"""Importers: turn the layouts users have on disk (BIDS, DICOM, CT-RATE, M3D, CSV, nnU-Net, DeepLesion, CLEAR) into prepared datasets."""
