"""Benchmarks and profiles: scripts that print figures, run from the repository root as
`python -m benchmarks.<name>` (the make targets do). Not installed with the package."""
