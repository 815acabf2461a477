"""Synthetic labelled data for a contrast without labels (MRGen's data engine): ``radlens synth``.

:mod:`radlens.synth.command` (the command), :mod:`~radlens.synth.sources` (source masks, prompts, seeds),
:mod:`~radlens.synth.generate` (batched generation and segmentation), :mod:`~radlens.synth.filter` (the
segmentation-agreement filter), :mod:`~radlens.synth.output` (the prepared dataset it writes).
"""
