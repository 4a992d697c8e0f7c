"""A background thread that runs the Renderer on the newest RenderArgs.

The GUI calls ``submit(args)`` as often as it likes; only the newest pending request is
kept (older ones are dropped, counted in ``dropped``), so the worker never falls behind.
``poll()`` returns the newest finished result once, and ``on_result`` (if given) is called
on the worker thread after each one, so an idle GUI that sleeps until something happens
wakes up. Torch releases the GIL inside its kernels, so the GUI thread keeps drawing while a
frame renders.

One-off jobs that need the network (exports) go through ``submit_task(fn)``: ``fn(renderer)``
runs on the worker thread before the next render and returns one line, which the GUI collects
with ``poll_tasks()`` (``has_result`` is true meanwhile, so an idle GUI draws a frame for it).
"""
from __future__ import annotations

import threading
from typing import Callable

from viz.render_args import RenderArgs
from viz.renderer import Renderer, RenderResult


class RenderWorker:
    """Owns one Renderer on its own thread. ``renderer_factory`` runs on that thread;
    ``on_result`` is called there after each finished result (it must be thread-safe)."""

    def __init__(self, renderer_factory: Callable[[], Renderer],
                 on_result: Callable[[], None] | None = None) -> None:
        self._factory = renderer_factory
        self._on_result = on_result
        self._cond = threading.Condition()
        self._pending: RenderArgs | None = None
        self._result: RenderResult | None = None
        self._stop = False
        self._busy = False
        self._serial = 0
        self._tasks: list[tuple[int, Callable[[Renderer], str]]] = []
        self._finished: list[tuple[int, str]] = []
        self._task_ids = 0
        self.renderer: Renderer | None = None
        self.submitted = 0
        self.dropped = 0          # requests replaced by a newer one before the worker took them
        self.completed = 0
        self._thread = threading.Thread(target=self._run, name='spherehead-render', daemon=True)
        self._thread.start()

    # ---- GUI side -------------------------------------------------------------------------------
    def submit(self, args: RenderArgs) -> None:
        """Ask for a render of ``args``; a request still waiting is replaced (dropped)."""
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = args
            self.submitted += 1
            self._cond.notify()

    def submit_task(self, task: Callable[[Renderer], str]) -> int:
        """Run ``task(renderer)`` on the worker thread before the next render; returns the task's id.
        Its line (or why it failed) comes back through ``poll_tasks``."""
        with self._cond:
            self._task_ids += 1
            self._tasks.append((self._task_ids, task))
            self._cond.notify()
            return self._task_ids

    def poll_tasks(self) -> list[tuple[int, str]]:
        """(id, line) of the tasks finished since the last call."""
        with self._cond:
            done, self._finished = self._finished, []
            return done

    def poll(self) -> RenderResult | None:
        """The newest finished result not yet returned, else None."""
        with self._cond:
            result, self._result = self._result, None
            return result

    @property
    def has_result(self) -> bool:
        """A finished result waits for ``poll()`` (or a finished task for ``poll_tasks()``)."""
        with self._cond:
            return self._result is not None or bool(self._finished)

    @property
    def busy(self) -> bool:
        """Rendering, or a request waiting (renders and tasks)."""
        with self._cond:
            return self._busy or self._pending is not None or bool(self._tasks)

    @property
    def status(self) -> str:
        r = self.renderer
        if r is None:
            return 'starting'
        return r.status if self.busy else 'idle'

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---- worker side ------------------------------------------------------------------------------
    def _take_pending(self):
        """Block until a request or task is pending; take it (marking the worker busy), or None on stop.
        Tasks go first: a task is a (id, function) tuple, a request RenderArgs."""
        with self._cond:
            while self._pending is None and not self._tasks and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            self._busy = True
            if self._tasks:
                return self._tasks.pop(0)
            args, self._pending = self._pending, None
            return args

    def _run_task(self, item: tuple[int, Callable[[Renderer], str]], failure: str | None) -> None:
        task_id, task = item
        if failure is not None:
            line = failure
        else:
            try:
                line = task(self.renderer)
            except Exception as e:  # noqa: BLE001 - reported as the task's line
                line = f'{type(e).__name__}: {e}'
        with self._cond:
            self._finished.append((task_id, line))
            self._busy = False
        self._notify()

    def _run(self) -> None:
        try:
            self.renderer = self._factory()
        except Exception as e:  # noqa: BLE001 - reported through results
            err = f'{type(e).__name__}: {e}'
            self.renderer = None
            while (args := self._take_pending()) is not None:
                if isinstance(args, tuple):
                    self._run_task(args, f'the renderer did not start: {err}')
                    continue
                with self._cond:
                    self._result = RenderResult(args=args, error=err)
                    self._busy = False
                self._notify()
            return
        while (args := self._take_pending()) is not None:
            if isinstance(args, tuple):
                self._run_task(args, None)
                continue
            result = self.renderer.render(args)
            with self._cond:
                self._serial += 1
                result.serial = self._serial
                self._result = result
                self._busy = False
                self.completed += 1
            self._notify()

    def _notify(self) -> None:
        if self._on_result is not None:
            try:
                self._on_result()
            except Exception:  # noqa: BLE001 - a failed wake-up only delays the GUI until its next timeout
                pass
