"""Developer tools that are not part of the installed daemon: dashboards and benchmarks."""
