"""The remote protocol, the script builders, Jupyter's launch values, and the sh files (`sh/`).

Pure: text in, text out. Nothing here spawns a process or opens a file but its own sh files.
"""
