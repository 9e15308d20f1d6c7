"""Compose stack files: loading (line-precise errors), interpolation, schema, conversion to API objects."""
