"""Thin layers over glfw, OpenGL 3.3 core and Dear ImGui (imgui-bundle) for the visualizer.

Nothing here knows about networks: `display` checks that a window can be opened,
`window` owns the glfw window + ImGui context, `texture` keeps an image on the GPU,
`fonts` loads the fonts shipped inside imgui-bundle, `widgets` holds small drawing helpers.
"""
