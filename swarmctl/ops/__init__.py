"""Operations, one module per verb: read facts -> plan (pure) -> apply, returning a Report."""
