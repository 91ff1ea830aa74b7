"""``ivra.minivla``: a tiny LLaRA-style policy (transformers LLaVA classes) trained and shipped by the project."""
