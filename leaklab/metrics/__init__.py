"""How attacks are scored: image similarity for reconstructions, ROC statistics for inference."""

__all__: list[str] = []
