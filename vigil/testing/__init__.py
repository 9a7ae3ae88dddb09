"""Test doubles that speak real protocols (device emulators, virtual BLE peripherals)."""
