"""The web UI and REST API (FastAPI; server-rendered pages, local assets only)."""
