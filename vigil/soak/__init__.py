"""`make soak`: a simulated night of replayed guests with injected faults, and its report.

`python -m vigil.soak --hours 12 --speed 10 --guests 20` runs the real daemon (`vigil run`), `vigil sync`,
mosquitto, a loopback booking platform and emulated serial oximeters, injects the faults of
`vigil.soak.faults.schedule`, and prints `vigil.soak.report.format_report`.
"""
