"""Train SphereHead (or a tri-plane / tri-grid / single-sphere baseline) on an EG3D/PanoHead dataset.

    python train.py --data heads.zip --outdir runs --cfg demo --kimg 1000 --batch 32
    torchrun --nproc_per_node=4 train.py --data heads.zip --outdir runs --cfg paper --batch 32
    python train.py --config runs/00003-.../training_options.json --resume runs/00003-.../

The command itself is spherehead/tools/train_command.py; see docs/training.md.
"""
from spherehead.tools.train_command import build_config, main  # noqa: F401  (build_config: tests, scripts)

if __name__ == '__main__':
    main()
