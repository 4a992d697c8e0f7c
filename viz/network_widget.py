"""Network: path field, recent list, folder browser, drag-and-drop, following a training run;
shows the loaded model's config and, when a load fails, why.

Loading happens on the render worker (the window keeps drawing). The widget keeps three
names apart: ``network`` (what the render arguments ask for), ``current`` (what the worker
has loaded, i.e. what is shown) and ``failed`` (the last source that did not load). A failed
load sets ``network`` back to ``current``, so the previous network keeps rendering.

Following a run: given a training run folder, the widget asks for its newest
``network-snapshot-<kimg>.safetensors`` and looks for a newer one every ``follow_interval``
seconds (one directory listing, from the GUI loop even while it draws nothing).

Compare mode: ``compare`` names a second network rendered beside the first in lockstep
(``viz.compare``); it keeps the same three-way bookkeeping (asked for, shown, failed). A compare
network that does not load leaves the previous one; with none before, compare mode ends.
"""
from __future__ import annotations

import os
import time

from imgui_bundle import imgui

from spherehead.checkpoint import newest_snapshot
from spherehead.errors import UserError
from viz.render_args import RenderArgs
from viz.widget import Widget

NETWORK_SUFFIXES = ('.safetensors', '.pkl')
BUILTIN = ('demo', 'demo-triplane', 'random:tiny', 'random:demo')
ERROR_RGBA = (1.0, 0.45, 0.45, 1.0)


def _find_snapshot(folder: str) -> str | None:
    """The newest network snapshot in ``folder`` as a string, None when there is none or it cannot be read."""
    try:
        path = newest_snapshot(folder)
    except (UserError, OSError):
        return None
    return str(path) if path is not None else None


class NetworkWidget(Widget):
    title = 'Network'

    def __init__(self, viz=None, network: str = 'demo', follow_interval: float = 2.0) -> None:
        super().__init__(viz)
        self.network = ''                  # source the render arguments ask for ('' = nothing yet)
        self.current: str | None = None    # source the worker has loaded (shown)
        self.edit = network
        self.error = ''                    # one line: why ``failed`` did not load
        self.failed: str | None = None
        self.recent: list[str] = []
        self.browse_dir = os.getcwd()
        self._entries: list[tuple[str, bool]] | None = None
        # following a training run
        self.follow_dir: str | None = None
        self.follow_interval = float(follow_interval)
        self.follow_status = ''
        self._follow_requested: str | None = None    # newest snapshot already asked for
        self._follow_next = 0.0                      # time.monotonic() of the next look
        # compare mode: a second network rendered beside this one
        self.compare = ''                  # source asked for on the right ('' = not comparing)
        self.compare_current: str | None = None   # source the worker shows on the right
        self.compare_edit = ''
        self.compare_error = ''            # one line: why ``compare_failed`` did not load
        self.compare_failed: str | None = None
        self.compare_note = ''             # e.g. which snapshot of a run folder is compared
        self.difference = False            # the difference panel
        if os.path.isdir(network):
            self.follow(network)
        else:
            self.request(network)

    def _remember(self, source: str) -> None:
        if source in self.recent:
            self.recent.remove(source)
        self.recent.insert(0, source)
        del self.recent[12:]

    # ---- requests ----------------------------------------------------------------------------
    def request(self, source: str) -> None:
        """Ask the worker for ``source`` (what the render arguments carry); the result comes back
        through ``loaded`` or ``load_failed``."""
        self.network = os.path.abspath(source) if os.path.exists(source) else source
        self.edit = self.network if not self.follow_dir else self.follow_dir
        self.error, self.failed = '', None

    def load(self, source: str) -> None:
        """Switch to ``source`` (a path, 'demo' or 'random:...'). A folder holding network snapshots is
        followed as a training run; any other folder opens in the browser."""
        source = source.strip()
        if not source:
            return
        if os.path.isdir(source):
            if _find_snapshot(source) is not None:
                self.follow(source)
            else:
                self.browse_dir = os.path.abspath(source)
                self._entries = None
                self.error = ('it holds no network-snapshot-*.safetensors; it is open in "browse folder" '
                              'below: pick a network file there')
                self.failed = self.browse_dir
                self.reveal = True
            return
        self.follow_dir = None
        self.request(source)

    def follow(self, run_dir: str) -> None:
        """Show the newest snapshot of a training run and switch to newer ones as they appear."""
        self.follow_dir = os.path.abspath(run_dir)
        self.edit = self.follow_dir
        self._follow_requested = None
        self._follow_next = 0.0
        self._remember(self.follow_dir)
        self.reveal = True                 # the panel says which run and snapshot are shown
        self.poll_run()

    def stop_following(self) -> None:
        self.follow_dir = None
        self.follow_status = ''
        if self.current:
            self.edit = self.network = self.current

    def poll_run(self, now: float | None = None) -> bool:
        """When following and due, look for a newer snapshot and ask for it. Returns whether it asked."""
        if not self.follow_dir:
            return False
        now = time.monotonic() if now is None else now
        if now < self._follow_next:
            return False
        self._follow_next = now + self.follow_interval
        try:
            newest = newest_snapshot(self.follow_dir)
        except (UserError, OSError) as e:
            self.follow_status = f'cannot read the run folder: {e}'
            return False
        if newest is None:
            self.follow_status = (f'no network-snapshot-*.safetensors here yet; looking again every '
                                  f'{self.follow_interval:g} s')
            return False
        self.follow_status = ''
        newest = str(newest)
        if newest == self._follow_requested:
            return False
        self._follow_requested = newest        # asked once: a snapshot that fails to load is not retried
        self.request(newest)
        return True

    def seconds_to_next_poll(self, now: float | None = None) -> float | None:
        if not self.follow_dir:
            return None
        return max(0.0, self._follow_next - (time.monotonic() if now is None else now))

    # ---- compare mode ----------------------------------------------------------------------------
    def set_compare(self, source: str) -> None:
        """Render ``source`` beside the network, in lockstep; '' stops comparing. A run folder gives
        its newest snapshot (it is not followed)."""
        source = source.strip()
        self.compare_error, self.compare_failed, self.compare_note = '', None, ''
        if not source:
            self.stop_comparing()
            return
        if os.path.isdir(source):
            snapshot = _find_snapshot(source)
            if snapshot is None:
                self.compare_error = ('it holds no network-snapshot-*.safetensors; give a network file, a run '
                                      'folder with snapshots, demo or random:tiny')
                self.compare_failed = os.path.abspath(source)
                self.compare_edit = source
                self.reveal = True
                return
            self.compare_note = f'the newest snapshot of the run {os.path.abspath(source)}'
            source = snapshot
        self.compare = os.path.abspath(source) if os.path.exists(source) else source
        self.compare_edit = self.compare
        self.reveal = True                 # the panel holds the compare controls (difference, stop)

    def stop_comparing(self) -> None:
        self.compare, self.compare_current, self.compare_note = '', None, ''

    def compare_loaded(self, source: str) -> None:
        """The worker shows ``source`` on the right (only what was asked for counts: after a failed load
        the worker may still hold a network compared before)."""
        if source == self.compare and source != self.compare_current:
            self.compare_current = source
            self._remember(source)

    def compare_load_failed(self, source: str, message: str) -> None:
        """``source`` did not load for the right side; the previous one stays, or compare mode ends."""
        if source != self.compare:
            return
        if message.startswith(f'{source}: '):
            message = message[len(source) + 2:]
        self.compare_error, self.compare_failed = message, source
        self.compare = self.compare_current or ''
        self.compare_edit = source
        self.reveal = True

    def compare_error_text(self) -> str:
        if not self.compare_error:
            return ''
        still = (f'Still comparing with {self.compare_current}.' if self.compare and self.compare_current
                 else 'Not comparing.')
        return f"Could not load {self.compare_failed} to compare: {self.compare_error.rstrip('.')}. {still}"

    # ---- what the worker reports ---------------------------------------------------------------
    def loaded(self, source: str) -> None:
        """The worker shows ``source``."""
        if source != self.current:
            self.current = source
            if not self.follow_dir:
                self._remember(source)

    def load_failed(self, source: str, message: str) -> None:
        """``source`` did not load; the worker still shows ``current`` (if any)."""
        if source != self.network:
            return                      # the user has asked for something else meanwhile
        if message.startswith(f'{source}: '):
            message = message[len(source) + 2:]     # the panel names the source itself
        self.error, self.failed = message, source
        if self.current is not None:
            self.network = self.current
            if not self.follow_dir:
                self.edit = source      # keep the bad name in the field, to correct it
        self.reveal = True

    def error_text(self) -> str:
        """The failure as the panel shows it: what failed, why and what to do, and what is still shown."""
        if not self.error:
            return ''
        still = (f'Still showing {self.current}.' if self.current and self.current != self.failed
                 else 'Nothing is loaded: give another network above.')
        return f"Could not load {self.failed}: {self.error.rstrip('.')}. {still}"

    @property
    def loading(self) -> bool:
        return bool(self.network) and self.network != self.current and not self.error

    def status_line(self) -> str:
        """What the view says while nothing is shown."""
        if self.follow_dir and not self.network:
            return f'waiting for the first snapshot in {self.follow_dir}'
        if self.error:
            return f'could not load {self.failed}'
        return f'loading {self.network}' if self.loading else 'waiting'

    # ---- panel ----------------------------------------------------------------------------------
    def entries(self) -> list[tuple[str, bool]]:
        """(name, is_folder) in the browsed folder: sub-folders, then network files."""
        if self._entries is None:
            try:
                names = sorted(os.listdir(self.browse_dir))
            except OSError:
                names = []
            dirs = [(n, True) for n in names if not n.startswith('.') and os.path.isdir(os.path.join(self.browse_dir, n))]
            files = [(n, False) for n in names if n.endswith(NETWORK_SUFFIXES)]
            self._entries = dirs + files
        return self._entries

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(network=self.network, compare=self.compare,
                            compare_diff=bool(self.compare) and self.difference)

    def draw(self) -> None:
        imgui.set_next_item_width(-50)
        entered, self.edit = imgui.input_text('##network', self.edit, imgui.InputTextFlags_.enter_returns_true.value)
        imgui.same_line()
        if imgui.button('load') or entered:
            self.load(self.edit)
        imgui.text_disabled('a .safetensors / .pkl file or a run folder, or drop one here')
        if self.error:
            imgui.push_style_color(imgui.Col_.text.value, imgui.ImVec4(*ERROR_RGBA))
            imgui.text_wrapped(self.error_text())
            imgui.pop_style_color()
        choices = list(dict.fromkeys(self.recent + [b for b in BUILTIN if b not in self.recent]))
        imgui.set_next_item_width(-1)
        if imgui.begin_combo('##recent', 'recent and built-in networks'):
            for c in choices:
                if imgui.selectable(c, c in (self.network, self.follow_dir))[0]:
                    self.load(c)
            imgui.end_combo()
        if self.follow_dir:
            self._draw_follow()
        if imgui.tree_node('browse folder'):
            imgui.text_wrapped(self.browse_dir)
            if imgui.small_button('..'):
                self.browse_dir = os.path.dirname(self.browse_dir.rstrip(os.sep)) or os.sep
                self._entries = None
            imgui.same_line()
            if imgui.small_button('refresh'):
                self._entries = None
            if any(n.startswith('network-snapshot-') for n, is_dir in self.entries() if not is_dir):
                imgui.same_line()
                if imgui.small_button('follow this run'):
                    self.follow(self.browse_dir)
            if imgui.begin_child('##entries', imgui.ImVec2(0, 110), imgui.ChildFlags_.borders.value):
                for name, is_dir in self.entries():
                    if imgui.selectable(name + ('/' if is_dir else ''), False)[0]:
                        path = os.path.join(self.browse_dir, name)
                        if is_dir:
                            self.browse_dir, self._entries = path, None
                        else:
                            self.load(path)
            imgui.end_child()
            imgui.tree_pop()
        self.draw_info()
        self._draw_compare(choices)

    def _draw_compare(self, choices: list[str]) -> None:
        imgui.separator()
        imgui.text('compare with')
        imgui.set_next_item_width(-70)
        entered, self.compare_edit = imgui.input_text('##compare', self.compare_edit,
                                                      imgui.InputTextFlags_.enter_returns_true.value)
        imgui.same_line()
        if imgui.button('compare') or entered:
            self.set_compare(self.compare_edit)
        imgui.text_disabled('a second network, beside this one, in lockstep')
        imgui.set_next_item_width(-1)
        if imgui.begin_combo('##compare_recent', 'recent and built-in networks'):
            for c in choices:
                if imgui.selectable(c, c == self.compare)[0]:
                    self.set_compare(c)
            imgui.end_combo()
        if self.compare_error:
            imgui.push_style_color(imgui.Col_.text.value, imgui.ImVec4(*ERROR_RGBA))
            imgui.text_wrapped(self.compare_error_text())
            imgui.pop_style_color()
        if not self.compare:
            return
        _, self.difference = imgui.checkbox('difference view [D]', self.difference)
        imgui.same_line()
        if imgui.small_button('stop comparing'):
            self.stop_comparing()
            return
        if self.compare_note:
            imgui.text_wrapped(f'right: {self.compare_note}')
        info = self.viz.compare_info if self.viz else {}
        if info and info.get('source') == self.compare_current:
            cfg = info['config']
            imgui.text_wrapped(f"right: {self.compare_current}: {cfg['representation']}, {cfg['img_resolution']} px, "
                               f"z_dim {cfg['z_dim']}, {info['num_parameters'] / 1e6:.2f} M parameters")
        elif self.compare != self.compare_current:
            imgui.text_disabled(f'loading {self.compare} ...')

    def _draw_follow(self) -> None:
        imgui.text_wrapped(f'following the run {self.follow_dir}')
        if self.current and os.path.dirname(self.current) == self.follow_dir:
            imgui.text_wrapped(f'showing {os.path.basename(self.current)}; a newer snapshot is loaded when it '
                               f'appears (looks every {self.follow_interval:g} s)')
        if self.follow_status:
            imgui.text_wrapped(self.follow_status)
        if imgui.small_button('stop following'):
            self.stop_following()

    def draw_info(self) -> None:
        info = self.viz.network_info if self.viz else {}
        if self.loading:
            imgui.text_disabled(f'loading {self.network} ...')
        if not info or info.get('source') != self.current:
            if not self.loading:
                imgui.text_disabled('no network loaded')
            return
        if not self.follow_dir:
            imgui.text_wrapped(f'showing {self.current}')
        cfg = info['config']
        r = cfg['rendering']
        rows = [
            ('representation', cfg['representation']),
            ('output', f"{cfg['img_resolution']} px, raw {r['neural_rendering_resolution']} px"),
            ('planes', f"{cfg['triplane_size']} px x {cfg['feature_channels']} ch"),
            ('z_dim', str(cfg['z_dim'])),
            ('samples / ray', f"{r['depth_resolution']} + {r['depth_resolution_importance']}"),
            ('parsing', 'on' if cfg['use_parsing'] else 'off'),
            ('background', 'on' if cfg['use_background'] else 'off'),
            ('parameters', f"{info['num_parameters'] / 1e6:.2f} M"),
        ]
        if imgui.begin_table('##netinfo', 2, imgui.TableFlags_.sizing_fixed_fit.value):
            for k, v in rows:
                imgui.table_next_row()
                imgui.table_next_column()
                imgui.text_disabled(k)
                imgui.table_next_column()
                imgui.text(v)
            imgui.end_table()
