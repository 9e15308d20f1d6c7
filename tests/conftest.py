"""Shared pytest setup. End-to-end fixtures live in tests/e2e/conftest.py."""
