"""channeld process shell: CLI, config, lifecycle, admin server."""
