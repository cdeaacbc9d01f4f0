"""placeholder"""
from wsss_core.fsl import feature_similarity_loss, feature_similarity_loss_dense, FeatureSimilarityLoss
