"""Network: path field, recent list, folder browser, drag-and-drop; shows the model's config.

Loading happens on the render worker (the window keeps drawing); the config shown is the
one the worker reports for the network it has loaded.
"""
from __future__ import annotations

import os

from imgui_bundle import imgui

from viz.render_args import RenderArgs
from viz.widget import Widget

NETWORK_SUFFIXES = ('.safetensors', '.pkl')
BUILTIN = ('demo', 'random:tiny', 'random:demo')


class NetworkWidget(Widget):
    title = 'Network'

    def __init__(self, viz=None, network: str = 'demo') -> None:
        super().__init__(viz)
        self.network = network
        self.edit = network
        self.recent: list[str] = []
        self.browse_dir = os.getcwd()
        self._entries: list[tuple[str, bool]] | None = None
        self._remember(network)

    def _remember(self, source: str) -> None:
        if source in self.recent:
            self.recent.remove(source)
        self.recent.insert(0, source)
        del self.recent[12:]

    def load(self, source: str) -> None:
        """Switch to ``source`` (a path, 'demo' or 'random:...'); a dropped folder opens in the browser."""
        source = source.strip()
        if not source:
            return
        if os.path.isdir(source):
            self.browse_dir = os.path.abspath(source)
            self._entries = None
            return
        self.network = os.path.abspath(source) if os.path.exists(source) else source
        self.edit = self.network
        self._remember(self.network)

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
        return args.replace(network=self.network)

    def draw(self) -> None:
        imgui.set_next_item_width(-50)
        entered, self.edit = imgui.input_text('##network', self.edit, imgui.InputTextFlags_.enter_returns_true.value)
        imgui.same_line()
        if imgui.button('load') or entered:
            self.load(self.edit)
        imgui.text_disabled('or drop a .safetensors / .pkl file on the window')
        choices = list(dict.fromkeys(self.recent + [b for b in BUILTIN if b not in self.recent]))
        imgui.set_next_item_width(-1)
        if imgui.begin_combo('##recent', 'recent and built-in networks'):
            for c in choices:
                if imgui.selectable(c, c == self.network)[0]:
                    self.load(c)
            imgui.end_combo()
        if imgui.tree_node('browse folder'):
            imgui.text_wrapped(self.browse_dir)
            if imgui.small_button('..'):
                self.browse_dir = os.path.dirname(self.browse_dir.rstrip(os.sep)) or os.sep
                self._entries = None
            imgui.same_line()
            if imgui.small_button('refresh'):
                self._entries = None
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

    def draw_info(self) -> None:
        info = self.viz.network_info if self.viz else {}
        if not info or info.get('source') != self.network:
            status = self.viz.worker.status if self.viz and self.viz.worker else ''
            imgui.text_disabled(f'loading {self.network} ...' if status.startswith('loading') else
                                f'{self.network}: not loaded yet')
            return
        cfg = info['config']
        r = cfg['rendering']
        rows = [
            ('representation', cfg['representation']),
            ('output', f"{cfg['img_resolution']} px, raw {r['neural_rendering_resolution']} px"),
            ('planes', f"{cfg['triplane_size']} px x {cfg['feature_channels']} ch"),
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
