"""Composition and process life: the node, roles, signals, systemd,
logging, metrics, the served model."""
