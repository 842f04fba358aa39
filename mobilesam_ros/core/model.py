"""PyTorch modules of MobileSAM as this package runs and exports them.

The image encoder is `tiny_vit.TinyViTEncoder`; the prompt encoder and mask decoder are Meta's
`segment_anything` modules, driven by `PromptDecoder`, which embeds prompts the way SAM's own ONNX
wrapper does (so the number of prompts and points can vary in one graph) and decodes every prompt
of a frame in one batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from .checkpoint import UNUSED_ENCODER_KEYS, load_state_dict, match_state_dict, split_model_parts
from .model_constants import EMBEDDING_CHANNELS, EMBEDDING_SIZE, IMAGE_SIZE, LOW_RES_SIZE
from .tiny_vit import TinyViTEncoder


def build_prompt_encoder() -> PromptEncoder:
    return PromptEncoder(
        embed_dim=EMBEDDING_CHANNELS,
        image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )


def build_mask_decoder() -> MaskDecoder:
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=EMBEDDING_CHANNELS, mlp_dim=2048, num_heads=8
        ),
        transformer_dim=EMBEDDING_CHANNELS,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


class PromptDecoder(nn.Module):
    """Prompt encoder + mask decoder for N prompts on one image embedding.

    Inputs:
      image_embeddings: (1, 256, 64, 64)
      point_coords:     (N, T, 2) x, y in the 1024x1024 model frame
      point_labels:     (N, T) 1 foreground, 0 background, 2/3 box corners, -1 padding
      mask_input:       (M, 1, 256, 256) previous low-res logits, M = 1 (shared) or N
      has_mask_input:   (M,) 1.0 where mask_input is used, else 0.0
    Outputs:
      low_res_masks:    (N, K, 256, 256) logits, K = 3 with multimask else 1
      iou_predictions:  (N, K)
    """

    def __init__(
        self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, multimask: bool
    ) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.multimask = multimask
        # Token 0 is the single-mask output, tokens 1-3 the multimask ones (as in SamPredictor).
        self.mask_tokens = (1, 2, 3) if multimask else (0,)
        self.register_buffer(
            "image_pe", prompt_encoder.get_dense_pe().detach().clone(), persistent=False
        )

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        encoder = self.prompt_encoder
        coords = (coords + 0.5) / IMAGE_SIZE
        embedding = encoder.pe_layer._pe_encoding(coords)
        labels = labels.unsqueeze(-1)
        embedding = embedding * (labels != -1)
        embedding = embedding + encoder.not_a_point_embed.weight * (labels == -1)
        for i, point_embedding in enumerate(encoder.point_embeddings):
            embedding = embedding + point_embedding.weight * (labels == i)
        return embedding

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        mask_embedding = self.prompt_encoder.mask_downscaling(mask_input) * has_mask
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return mask_embedding + (1 - has_mask) * no_mask

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        decoder = self.mask_decoder
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        num_prompts = sparse.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(num_prompts, -1, -1), sparse], dim=1)
        # SAM copies the image embedding once per prompt (repeat_interleave). Broadcasting the
        # single copy instead gives the same numbers and lets the first attention layer project
        # the image keys once for all prompts; they become per-prompt after that layer.
        src = image_embeddings + dense
        hs, src = decoder.transformer(src, self.image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        src = src.transpose(1, 2).reshape(-1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE)
        upscaled = decoder.output_upscaling(src)
        channels = upscaled.shape[1]
        hyper_in = torch.stack(
            [decoder.output_hypernetworks_mlps[t](hs[:, 1 + t, :]) for t in self.mask_tokens], dim=1
        )
        masks = hyper_in @ upscaled.reshape(-1, channels, LOW_RES_SIZE * LOW_RES_SIZE)
        masks = masks.reshape(-1, len(self.mask_tokens), LOW_RES_SIZE, LOW_RES_SIZE)
        iou = decoder.iou_prediction_head(iou_token_out)
        first = self.mask_tokens[0]
        return masks, iou[:, first : first + len(self.mask_tokens)]


@dataclass
class MobileSamModules:
    """The loaded, inference-ready modules of one checkpoint."""

    encoder: TinyViTEncoder
    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder

    def decoder(self, multimask: bool) -> PromptDecoder:
        return PromptDecoder(self.prompt_encoder, self.mask_decoder, multimask).eval()


def load_modules(checkpoint: str | os.PathLike[str]) -> MobileSamModules:
    """Build the three parts and load them strictly from a MobileSAM checkpoint."""
    parts = split_model_parts(load_state_dict(checkpoint), source=str(checkpoint))
    encoder = TinyViTEncoder()
    match_state_dict(encoder, parts["image_encoder"], "image_encoder", UNUSED_ENCODER_KEYS)
    prompt_encoder = build_prompt_encoder()
    match_state_dict(prompt_encoder, parts["prompt_encoder"], "prompt_encoder")
    mask_decoder = build_mask_decoder()
    match_state_dict(mask_decoder, parts["mask_decoder"], "mask_decoder")
    return MobileSamModules(encoder.fuse_(), prompt_encoder.eval(), mask_decoder.eval())


@torch.no_grad()
def write_random_checkpoint(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a checkpoint in the official `mobile_sam.pt` layout with random weights.

    For tests, benchmarks and offline pipeline checks: the masks it gives are meaningless.
    Every tensor is randomized (BatchNorm statistics and attention biases too, which a fresh
    initialization leaves at 0 or 1) so that comparisons exercise all of them.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder = TinyViTEncoder()
    parts = {
        "image_encoder": encoder.state_dict(),
        "prompt_encoder": build_prompt_encoder().state_dict(),
        "mask_decoder": build_mask_decoder().state_dict(),
    }
    # The official file also carries TinyViT's unused ImageNet classifier.
    last_dim = encoder.neck[0].in_channels
    parts["image_encoder"].update(
        {
            "norm_head.weight": torch.ones(last_dim),
            "norm_head.bias": torch.zeros(last_dim),
            "head.weight": torch.randn(1000, last_dim, generator=generator) * 0.02,
            "head.bias": torch.zeros(1000),
        }
    )
    state: dict[str, torch.Tensor] = {}
    for part, tensors in parts.items():
        for key, tensor in tensors.items():
            state[f"{part}.{key}"] = _randomized(key, tensor, generator)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _randomized(key: str, tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor.clone()
    shape = tensor.shape
    if key.endswith("running_var"):
        return torch.rand(shape, generator=generator) + 0.5
    if key.endswith("running_mean") or key.endswith("attention_biases"):
        return torch.randn(shape, generator=generator) * 0.1
    if key.endswith("bias"):
        return torch.randn(shape, generator=generator) * 0.02
    if ".bn.weight" in key or ("norm" in key and key.endswith("weight")):
        return torch.rand(shape, generator=generator) * 0.5 + 0.75
    return tensor.clone()
