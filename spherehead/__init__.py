"""SphereHead: stable 3D full-head synthesis with a dual spherical tri-plane.

    import spherehead as sh
    G = sh.load_generator('random:tiny')
    c = sh.camera.lookat(yaw_deg=180)
    ws = G.mapping(z, c, truncation_psi=0.7)
    out = G.synthesis(ws, c, sphere='fused')
"""
__version__ = '0.1.0'   # the one place the version is written: pyproject.toml reads it, `spherehead --version` prints it

from spherehead import camera
from spherehead.checkpoint import load_generator, save_generator
from spherehead.config import GeneratorConfig, RenderingConfig, preset
from spherehead.errors import UserError
from spherehead.released import ReleasedNetworks, load_released   # G, G_ema, D of a released snapshot

__all__ = ['camera', 'load_generator', 'save_generator', 'GeneratorConfig', 'RenderingConfig', 'preset', 'UserError',
           'load_released', 'ReleasedNetworks']
