"""SphereHead visualizer: orbit generated heads live and inspect each sphere.

    python visualizer.py [NETWORK]                  # NETWORK: .safetensors, .pkl, demo (default), random:tiny,
                                                    #          or a training run folder (follows its snapshots)
    python visualizer.py random:tiny --yaw 180 --render depth --snapshot out/back_depth.png
    python visualizer.py random:tiny --benchmark 15
    python visualizer.py demo --compare demo-triplane --difference   # two networks side by side, in lockstep

Installed, the same program is `spherehead view [NETWORK] ...`. Needs a display (X11 / Wayland,
or Xvfb via `xvfb-run -a`); see docs/visualizer.md. The command line lives in viz/cli.py.
"""
import os

# Before torch loads: idle OpenMP threads sleep instead of spinning, so that on a CPU the
# render worker's threads and the window's drawing do not take each other's cores.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from viz.cli import main  # noqa: E402

if __name__ == '__main__':
    main(prog_name='visualizer.py')
