"""The supervisor of start and attach, and its phases: tunnel, readiness, keep-alive, browser.

Knows steps, not shell syntax (`remote`) nor ssh flags (`ssh`).
"""
