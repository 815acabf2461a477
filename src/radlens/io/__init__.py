"""Readers and writers: NIfTI, DICOM, PNG/NPY, SimpleITK formats; metadata; PHI filter."""
