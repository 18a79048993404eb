"""Metric maths on arrays: pure functions, no file or model I/O.

- :mod:`~lift3d.metrics.image`: paired image fidelity (SynthRAD2023 MAE/PSNR/SSIM, BraSyn);
- :mod:`~lift3d.metrics.consistency`: through-plane coherence of RAS-ordered volumes;
- :mod:`~lift3d.metrics.distribution`: distances between feature sets (Frechet, KID, MMD,
  increments, histograms);
- :mod:`~lift3d.metrics.diversity`: mean pairwise 3D MS-SSIM / SSIM among the volumes of a set.

Folder scoring and the evaluation encoder live in :mod:`lift3d.evaluation`.
"""
