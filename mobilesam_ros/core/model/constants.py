"""Shapes of MobileSAM's inputs and outputs, importable without PyTorch."""

IMAGE_SIZE = 1024  # side of the square, padded model input
EMBEDDING_CHANNELS = 256
EMBEDDING_SIZE = 64  # side of the image embedding
LOW_RES_SIZE = 4 * EMBEDDING_SIZE  # 256: side of the decoder's mask logits
