"""Exporting a generated head to files other programs open.

- ``field``: the generator's density and colour at arbitrary points (shared by the exporters).
- ``mesh``: marching-cubes surfaces with vertex colours; .ply, .obj and .glb writers.
- ``splat_ply``: the 3D Gaussian Splatting .ply layout (writer and reader, numpy only).
- ``splats``: Gaussian splats made from the generator's own field.
- ``rasterize``: a reference 3DGS rasteriser in PyTorch that renders a splat file from a camera label.
- ``check``: splats rendered by the rasteriser compared with the generator's raw image (PSNR).

The command-line faces are ``spherehead mesh`` and ``spherehead splats`` (spherehead/tools/).
"""
