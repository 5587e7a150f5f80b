"""Drives OpenSSH: the target and `ssh -G`, failure classes, transports, the per-host
connection and its guard, processes, local ports. Imports nothing above it.
"""
