"""``spherehead dataset check``: is a dataset usable for training, and what is in it.

Reads every label and every image (and map), and reports counts, resolution, label sanity
(orthonormal rotation, camera distance, intrinsics), a yaw / pitch histogram, missing or
extra maps, unreadable images, out-of-range parsing ids and mixed resolutions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from spherehead.camera import DEFAULT_RADIUS, RELEASED_FOCAL, label_to_yaw_pitch
from spherehead.data.errors import DatasetError
from spherehead.data.labels import LABEL_FILE, _parse_label, read_labels
from spherehead.data.storage import IMAGE_EXTS, Storage, decode_image
from spherehead.parsing_classes import NUM_PARSING_CLASSES


@dataclass
class CheckReport:
    """Result of a check: ``problems`` make the dataset unusable, ``warnings`` do not."""
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _histogram(values: np.ndarray, edges: np.ndarray, title: str, width: int = 40) -> list[str]:
    counts, _ = np.histogram(values, bins=edges)
    top = max(int(counts.max()), 1)
    out = [title]
    for i, c in enumerate(counts):
        out.append(f'  [{edges[i]:6.0f}, {edges[i + 1]:6.0f})  {int(c):7d}  {"#" * int(round(width * c / top))}')
    return out


def _label_checks(labels: np.ndarray, names: list[str], report: CheckReport) -> None:
    m = labels[:, :16].astype(np.float64).reshape(-1, 4, 4)
    rot = m[:, :3, :3]
    err = np.abs(np.einsum('nji,njk->nik', rot, rot) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(rot)
    bad = np.nonzero((err > 1e-3) | (det < 0))[0]
    if len(bad):
        report.problems.append(f'label of "{names[bad[0]]}": cam2world rotation is not orthonormal with det +1 '
                               f'(max |R^T R - I| = {err[bad[0]]:.2e}, det = {det[bad[0]]:+.3f}; {len(bad)} labels); '
                               f'labels must be 4x4 cam2world, row-major, OpenCV axes')
    bottom = np.abs(m[:, 3] - np.array([0, 0, 0, 1.0])).max(axis=1)
    if (bottom > 1e-4).any():
        i = int(np.argmax(bottom))
        report.problems.append(f'label of "{names[i]}": last row of cam2world is not [0 0 0 1]; '
                               f'is the matrix transposed or world2cam?')
    _yaw, _pitch, dist = label_to_yaw_pitch(labels)
    report.lines.append(f'camera distance: min {dist.min():.3f}  mean {dist.mean():.3f}  max {dist.max():.3f} '
                        f'(released data: {DEFAULT_RADIUS})')
    if np.abs(dist - DEFAULT_RADIUS).max() > 0.5:
        report.warnings.append(f'camera distances range {dist.min():.2f}..{dist.max():.2f}, far from '
                               f'{DEFAULT_RADIUS}; set the rendering range to match')
    pos = m[:, :3, 3]
    fwd = m[:, :3, 2]
    cosang = -(pos * fwd).sum(1) / np.maximum(np.linalg.norm(pos, axis=1), 1e-9)
    if (cosang < 0.9).any():
        report.warnings.append(f'{int((cosang < 0.9).sum())} cameras do not look towards the origin '
                               f'(z axis more than 25 deg off); check the axis convention (OpenCV: z forward)')
    k = labels[:, 16:25].astype(np.float64).reshape(-1, 3, 3)
    fx, fy, cx, cy = k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]
    report.lines.append(f'intrinsics: focal {fx.min():.4f}..{fx.max():.4f}, principal point '
                        f'({cx.mean():.3f}, {cy.mean():.3f}) (released: focal {RELEASED_FOCAL}, (0.5, 0.5))')
    if (fx <= 0).any() or (fy <= 0).any() or np.abs(k[:, 2] - np.array([0, 0, 1.0])).max() > 1e-4:
        report.problems.append('intrinsics: focal must be positive and the last row [0 0 1]; intrinsics are '
                               'the 3x3 matrix normalised by image size')
    elif fx.max() > 50 or np.abs(cx - 0.5).max() > 0.25:
        report.problems.append(f'intrinsics look like pixels, not normalised by image size (focal up to '
                               f'{fx.max():.1f}, cx up to {cx.max():.1f}); divide the first two rows by the width')


def _read_labels_listing(st: Storage, report: CheckReport, max_listed: int) -> tuple[list[str], np.ndarray]:
    """Like read_labels, but every bad entry becomes a listed problem instead of stopping at the first.

    Returns the good entries. A missing or unparsable dataset.json still raises DatasetError.
    """
    import json
    try:
        return read_labels(st, check_files=False)
    except DatasetError as first:
        try:                                      # entry-level problems only; anything else stays fatal
            entries = json.loads(st.read(LABEL_FILE).decode('utf-8'))['labels']
            entries = list(entries.items()) if isinstance(entries, dict) else list(entries)
        except Exception:  # noqa: BLE001 - read_labels' own message says what is wrong
            raise first from None
    where = st.describe(LABEL_FILE)
    names, labels, bad, seen = [], [], [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
            bad.append(f'{where}: entry {i} is not [relpath, label]; fix dataset.json')
            continue
        name = entry[0].replace('\\', '/').removeprefix('./')
        if name in seen:
            bad.append(f'{where}: "{name}" is listed twice; remove the duplicate entry')
            continue
        seen.add(name)
        try:
            labels.append(_parse_label(entry[1], f'{where}: label of "{name}" (entry {i})'))
            names.append(name)
        except DatasetError as e:
            bad.append(str(e))
    report.problems += bad[:max_listed]
    if len(bad) > max_listed:
        report.problems.append(f'... and {len(bad) - max_listed} more bad entries in {where}')
    return names, np.asarray(labels, dtype=np.float32).reshape(-1, 25)


def check_dataset(path: str, progress: bool = True, max_listed: int = 10) -> CheckReport:
    """Check the dataset at ``path`` and list every problem found (the first ``max_listed`` of each kind).

    Only a dataset that cannot be read at all (no dataset.json, invalid JSON) raises DatasetError.
    """
    from tqdm import tqdm
    report = CheckReport()
    st = Storage(path)
    names, labels = _read_labels_listing(st, report, max_listed)
    report.lines.append(f'{path}: {len(names)} labelled images' + (' with usable labels' if report.problems else ''))
    if not names:
        return report
    missing = [n for n in names if not st.exists(n)]
    if missing:
        report.problems.append(f'dataset.json: "{missing[0]}" has no image at {st.describe(missing[0])} '
                               f'({len(missing)} missing); add the images or remove their entries')
    missing_set = set(missing)
    listed = set(names)
    unlabelled = [n for n in st.names() if n.lower().endswith(IMAGE_EXTS) and n not in listed
                  and not n.startswith(('masks/', 'parsing/', 'previews/'))]   # previews/: spherehead prepare's
    if unlabelled:
        report.warnings.append(f'{len(unlabelled)} images have no label and are ignored (e.g. '
                               f'{st.describe(unlabelled[0])})')

    _label_checks(labels, names, report)
    yaw, pitch, _ = label_to_yaw_pitch(labels)
    report.lines += _histogram(yaw, np.linspace(-180, 180, 13), 'yaw histogram (deg; 0 = front, 180 = back):')
    report.lines += _histogram(pitch, np.linspace(-90, 90, 13), 'pitch histogram (deg; +90 = from above):')

    maps = {}
    for what in ('masks', 'parsing'):
        if st.has_prefix(what):
            ms = Storage(path, prefix=what)
            expected = {os.path.splitext(n)[0] + '.png' for n in names if n not in missing_set}
            have = set(ms.names())
            miss = sorted(expected - have)
            extra = sorted(have - expected)
            report.lines.append(f'{what}: {len(have & expected)} of {len(names)} present')
            if miss:
                report.problems.append(f'{ms.describe(miss[0])}: {what} map missing ({len(miss)} missing); '
                                       f'add them or remove the {what}/ folder')
            if extra:
                report.warnings.append(f'{len(extra)} {what} maps have no image (e.g. {ms.describe(extra[0])})')
            maps[what] = (ms, have)
        else:
            report.lines.append(f'{what}: none')

    sizes: dict[tuple[int, int], int] = {}
    first_of_size: dict[tuple[int, int], str] = {}
    unreadable, bad_ids = [], []
    for name in tqdm(names, desc='check', unit='img', disable=not progress):
        if name in missing_set:
            continue
        where = st.describe(name)
        try:
            img = decode_image(st.read(name), where)
        except DatasetError as e:
            unreadable.append(str(e))
            continue
        size = (img.shape[1], img.shape[0])
        sizes[size] = sizes.get(size, 0) + 1
        first_of_size.setdefault(size, where)
        for what, (ms, have) in maps.items():
            mname = os.path.splitext(name)[0] + '.png'
            if mname not in have:
                continue
            try:
                m = decode_image(ms.read(mname), ms.describe(mname), channels=1)
            except DatasetError as e:
                unreadable.append(str(e))
                continue
            if m.shape != img.shape[:2]:
                unreadable.append(f'{ms.describe(mname)}: {what} map is {m.shape[1]}x{m.shape[0]} but its image is '
                                  f'{size[0]}x{size[1]}; repack with `spherehead dataset pack`')
            if what == 'parsing' and int(m.max()) >= NUM_PARSING_CLASSES:
                bad_ids.append(f'{ms.describe(mname)}: parsing id {int(m.max())} out of range '
                               f'0..{NUM_PARSING_CLASSES - 1}; remap to the class table in docs/datasets.md')
    report.lines.append('resolution: ' + ', '.join(f'{w}x{h} ({c} images)' for (w, h), c in sorted(sizes.items())))
    if len(sizes) > 1:
        (w0, h0), (w1, h1) = sorted(sizes, key=lambda s: -sizes[s])[:2]
        report.problems.append(f'{first_of_size[(w1, h1)]}: {w1}x{h1} but most images are {w0}x{h0} (mixed '
                               f'resolutions); repack with `spherehead dataset pack --resolution R`')
    if any(w != h for w, h in sizes):
        report.problems.append('images are not square; crop them square (labels assume square crops)')
    for group in (unreadable, bad_ids):
        for line in group[:max_listed]:
            report.problems.append(line)
        if len(group) > max_listed:
            report.problems.append(f'... and {len(group) - max_listed} more like this')
    return report
