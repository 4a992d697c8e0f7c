"""The SphereHead visualizer: widgets that edit render arguments, and the worker that renders them.

- `render_args`  the plain, hashable RenderArgs that widgets edit
- `renderer`     the only module that touches the network: RenderArgs -> RenderResult (images)
- `worker`       a background thread running the renderer on the newest arguments
- `app`          the window, the main loop and the scripted `--snapshot` mode
- one module per widget: network, camera, latent, spheres, render_type, artifacts,
  quality, performance, capture; `view` draws the render and handles the mouse on it
"""
