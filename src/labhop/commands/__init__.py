"""One module per command: each connects, runs its steps and returns data; none knows click."""
