"""Preprocessing: orient, resample, crop/pad, window/normalise, slice, caption, bin, label, split; importers and exporters."""
