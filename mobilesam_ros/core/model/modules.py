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
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.transformer import Attention
from torch import nn

from mobilesam_ros.core.files import write_atomically
from mobilesam_ros.core.model.checkpoint import (
    UNUSED_ENCODER_KEYS,
    load_state_dict,
    match_state_dict,
    split_model_parts,
)
from mobilesam_ros.core.model.constants import EMBEDDING_CHANNELS, EMBEDDING_SIZE, IMAGE_SIZE
from mobilesam_ros.core.model.tiny_vit import TinyViTEncoder


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


# SAM's cross-attentions project 4096 image tokens per prompt through q/k/v/out projections. With
# only a handful of prompt tokens on the other side, the same attention costs far less when the
# projections are moved to the token side (matrix products reassociated; identical maths):
#   tokens -> image: (q Wk) x^T for q (x Wk^T)^T, and (attn x) Wv^T + bv for attn (x Wv^T + bv)
#                    (the key bias adds a constant per row, which softmax ignores)
#   image -> tokens: x (Wq^T k^T) + bq k^T for (x Wq^T + bq) k^T, attn (v Wo^T) for (attn v) Wo^T
# Every per-prompt product then has the small token count as one side, and no 4096-token tensor is
# split into heads and transposed.


def _head_weights(linear: nn.Linear, heads: int) -> torch.Tensor:
    """(heads, head_dim, in_features) view of a projection's output rows, head by head."""
    return linear.weight.reshape(heads, -1, linear.in_features)


def attend_tokens_to_image(
    attention: Attention, tokens: torch.Tensor, image_keys: torch.Tensor, image_values: torch.Tensor
) -> torch.Tensor:
    """`attention(q=tokens, k=image_keys, v=image_values)`; tokens (N, T, E), image (N|1, L, E)."""
    heads = attention.num_heads
    head_dim = attention.internal_dim // heads
    q = attention.q_proj(tokens).unflatten(2, (heads, head_dim)).transpose(1, 2)  # (N, h, T, c)
    q_keys = (q @ _head_weights(attention.k_proj, heads)).flatten(1, 2)  # (N, hT, E)
    weights = ((q_keys @ image_keys.transpose(1, 2)) * head_dim**-0.5).softmax(dim=-1)
    context = (weights @ image_values).unflatten(1, (heads, -1))  # (N, h, T, E)
    out = context @ _head_weights(attention.v_proj, heads).transpose(1, 2)  # (N, h, T, c)
    out = out + attention.v_proj.bias.reshape(heads, 1, head_dim)
    return attention.out_proj(out.transpose(1, 2).flatten(2))


def attend_image_to_tokens(
    attention: Attention, image: torch.Tensor, token_keys: torch.Tensor, token_values: torch.Tensor
) -> torch.Tensor:
    """`attention(q=image, k=token_keys, v=token_values)`; image (N|1, L, E), tokens (N, T, E)."""
    heads = attention.num_heads
    head_dim = attention.internal_dim // heads
    k = attention.k_proj(token_keys).unflatten(2, (heads, head_dim)).transpose(1, 2)  # (N,h,T,c)
    v = attention.v_proj(token_values).unflatten(2, (heads, head_dim)).transpose(1, 2)
    query_keys = k @ _head_weights(attention.q_proj, heads)  # (N, h, T, E)
    query_bias = k @ attention.q_proj.bias.reshape(heads, head_dim, 1)  # (N, h, T, 1)
    logits = image @ query_keys.flatten(1, 2).transpose(1, 2) + query_bias.flatten(1, 3)[:, None]
    weights = (logits * head_dim**-0.5).unflatten(2, (heads, -1)).softmax(dim=-1)  # (N, L, h, T)
    out_weight = attention.out_proj.weight.reshape(-1, heads, head_dim).permute(1, 2, 0)  # (h,c,E)
    values_out = (v @ out_weight).flatten(1, 2)  # (N, hT, E)
    return weights.flatten(2) @ values_out + attention.out_proj.bias


def two_way_transformer(
    transformer: TwoWayTransformer,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    point_embedding: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's TwoWayTransformer.forward with the reassociated cross-attentions above.

    In the first block the image side is still the same for every prompt (batch 1 without mask
    prompts), so its token-to-image attention keeps SAM's form and projects the image once.
    """
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = point_embedding
    for index, layer in enumerate(transformer.layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        q = queries + point_embedding
        k = keys + key_pe
        if index == 0:
            attn_out = layer.cross_attn_token_to_image(q=q, k=k, v=keys)
        else:
            attn_out = attend_tokens_to_image(layer.cross_attn_token_to_image, q, k, keys)
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + point_embedding
        attn_out = attend_image_to_tokens(
            layer.cross_attn_image_to_token, keys + key_pe, q, queries
        )
        keys = layer.norm4(keys + attn_out)
    q = queries + point_embedding
    attn_out = attend_tokens_to_image(transformer.final_attn_token_to_image, q, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attn_out), keys


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
        hs, src = two_way_transformer(decoder.transformer, src, self.image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        hyper_in = torch.stack(
            [decoder.output_hypernetworks_mlps[t](hs[:, 1 + t, :]) for t in self.mask_tokens], dim=1
        )
        masks = self._upscale_masks(src, hyper_in)
        iou = decoder.iou_prediction_head(iou_token_out)
        first = self.mask_tokens[0]
        return masks, iou[:, first : first + len(self.mask_tokens)]

    def _upscale_masks(self, image_tokens: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """SAM's output_upscaling and mask product, on token-major data.

        SAM turns the (N, 4096, 256) tokens into NCHW, runs two 2x2 stride-2 transposed
        convolutions (LayerNorm2d and GELU between), and multiplies the (N, 32, 256, 256) result
        with the hypernetwork weights. A 2x2 stride-2 transposed convolution is one matrix
        product per input pixel, so both run as plain GEMMs on the tokens as they are, the 32
        channels are contracted with `hyper_in` right away, and only the (N, K, 256, 256) masks
        are rearranged into image order at the end.
        """
        conv1, norm, act1, conv2, act2 = self.mask_decoder.output_upscaling
        mid, out = conv1.out_channels, conv2.out_channels  # 64, 32
        # Weights (in, out, 2, 2) -> (in, 4 * out), columns ordered (row offset, col offset, out).
        weight1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * mid)
        x = (image_tokens @ weight1 + conv1.bias.repeat(4)).unflatten(2, (4, mid))
        x = act1(F.layer_norm(x, (mid,), norm.weight, norm.bias, norm.eps))  # (N, 4096, 4, 64)
        weight2 = conv2.weight.permute(0, 2, 3, 1).reshape(mid, 4 * out)
        x = act2(x.flatten(1, 2) @ weight2 + conv2.bias.repeat(4))  # (N, 16384, 4 * 32)
        masks = x.unflatten(2, (4, out)).flatten(1, 2) @ hyper_in.transpose(1, 2)  # (N, 65536, K)
        # Pixel (i, j, a1, b1, a2, b2) sits at row 4i + 2a1 + a2, column 4j + 2b1 + b2.
        side = EMBEDDING_SIZE
        masks = masks.transpose(1, 2).reshape(-1, side, side, 2, 2, 2, 2)
        masks = masks.permute(0, 1, 3, 5, 2, 4, 6).reshape(
            -1, len(self.mask_tokens), 4 * side, 4 * side
        )
        return masks


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
    return write_atomically(path, lambda tmp: torch.save(state, tmp))


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
