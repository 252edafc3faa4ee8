"""Shared protocol between the control plane and edge nodes: models, error codes, tokens, timing."""
