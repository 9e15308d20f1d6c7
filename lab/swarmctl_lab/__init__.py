"""The local multi-host lab used by the demo and the end-to-end tests."""
