"""The arms of the study: what each one changes, and nothing else.

Every arm trains with the same data, network preset, seed, batch, image budget and phase
schedule; an arm names only its representation, whether ViCo is on and whether G has the
parsing branch. The paper's Table 2 compares the first five.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    """One arm: its folder name, its label in the table and what it changes."""
    name: str                 # folder under the study directory, and the key in the JSON
    label: str                # row label of the table
    representation: str       # GeneratorConfig.representation
    vico: bool                # ViCo term in phase III (the phase schedule is the same for every arm)
    parsing: bool = True      # G's parsing branch (D sees the parsing map when it is on)

    def train_args(self) -> list[str]:
        """The train.py options that make this arm (added to the options every arm shares)."""
        args = ['--representation', self.representation]
        if not self.vico:
            args += ['--vico-weight', '0']
        if not self.parsing:
            args += ['--no-parsing']
        return args

    @property
    def is_sphere(self) -> bool:
        return self.representation in ('dual_sphere', 'single_sphere')


ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm('triplane', 'tri-plane (EG3D)', 'triplane', vico=False),
    Arm('trigrid', 'tri-grid (PanoHead)', 'trigrid', vico=False),
    Arm('single_sphere', 'single sphere', 'single_sphere', vico=False),
    Arm('dual_sphere', 'dual sphere, no ViCo', 'dual_sphere', vico=False),
    Arm('spherehead', 'dual sphere + ViCo (SphereHead)', 'dual_sphere', vico=True),
    Arm('spherehead_noparsing', 'dual sphere + ViCo, no parsing branch', 'dual_sphere', vico=True, parsing=False),
)}
DEFAULT_ARMS = ('triplane', 'trigrid', 'single_sphere', 'dual_sphere', 'spherehead')


def parse_arms(text: str) -> list[Arm]:
    """'triplane,spherehead' -> those arms, in the given order (ValueError naming an unknown one)."""
    names = [t.strip() for t in text.split(',') if t.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown or not names:
        raise ValueError(f'unknown arm {unknown[0]!r}' if unknown else 'no arm given')
    if len(set(names)) != len(names):
        raise ValueError(f'an arm is named twice in {text!r}')
    return [ARMS[n] for n in names]
