"""How attacks are scored: image similarity for reconstructions, ROC statistics for inference."""

from .image import ImageScores, label_accuracy, match, mse, psnr, score_images, ssim

__all__: list[str] = []
__all__ += ["ImageScores", "label_accuracy", "match", "mse", "psnr", "score_images", "ssim"]

from .classification import (InferenceScore, accuracy, advantage, auroc, auroc_ci, score_guesses,
                             tpr_at_fpr, tpr_at_fprs)

__all__ += ["InferenceScore", "accuracy", "advantage", "auroc", "auroc_ci", "score_guesses", "tpr_at_fpr", "tpr_at_fprs"]
