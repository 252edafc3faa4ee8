"""The operator dashboard: static files served at `/ui/` and the map projection they share."""
