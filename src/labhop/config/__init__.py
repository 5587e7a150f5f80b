"""Options with their sources, the config file (profiles), the hosts a user may mean."""
