"""The judge: model-independent scores for Shapes World samples.

    from minivid.eval import Judge, frechet_distance
    judge = Judge()
    judge.score(x, labels)      # color_acc, shape_acc, size_acc, motion_acc, validity, ...
    judge.frechet(x_real, x_gen)
"""
from minivid.eval.distances import mmd_rbf, psnr, sliced_wasserstein
from minivid.eval.frechet import frechet_distance, gaussian_frechet, psd_sqrt
from minivid.eval.judge import Judge
from minivid.eval.measure import fit_motion, hue_to_color, mask_ramp, measure_frames, saturation

__all__ = ["Judge", "fit_motion", "frechet_distance", "gaussian_frechet", "hue_to_color", "mask_ramp",
           "measure_frames", "psd_sqrt", "saturation", "mmd_rbf", "sliced_wasserstein", "psnr"]
