"""Metric maths on arrays: pure functions, no file or model I/O.

- :mod:`~lift3d.metrics.image`: paired image fidelity (SynthRAD2023 MAE/PSNR/SSIM, BraSyn);
- :mod:`~lift3d.metrics.consistency`: through-plane coherence of RAS-ordered volumes;
- :mod:`~lift3d.metrics.distribution`: distances between feature sets (Frechet, KID, increments,
  histograms).

Folder scoring and the evaluation encoder live in :mod:`lift3d.evaluation`.
"""
