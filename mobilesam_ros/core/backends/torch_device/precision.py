"""FP16 copies of the encoder and decoder that keep their precision-sensitive parts in FP32."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobilesam_ros.core.model.modules import PromptDecoder
from mobilesam_ros.core.model.tiny_vit import Attention, LayerNorm, LayerNorm2d

# Elements per attention-bias row: the fused kernels want an aligned mask stride and would
# otherwise pad a copy on every call.
_BIAS_ROW_ALIGNMENT = 16


def _reduced_precision_copy(
    module: nn.Module, dtype: torch.dtype, keep_fp32: tuple[type, ...]
) -> nn.Module:
    """A copy of `module` in `dtype`, converted once, except submodules of the `keep_fp32` types,
    whose parameters keep their exact FP32 values."""
    converted = copy.deepcopy(module).to(dtype)
    originals = dict(module.named_modules())
    for name, submodule in converted.named_modules():
        if isinstance(submodule, keep_fp32):
            submodule.float().load_state_dict(originals[name].state_dict())
    return converted.eval()


def reduced_precision_encoder(
    encoder: nn.Module, dtype: torch.dtype = torch.float16, fused_attention: bool = True
) -> nn.Module:
    """The TinyViT encoder in `dtype` with LayerNorm, LayerNorm2d and the attention softmax in
    FP32 (see tiny_vit.py); attention through scaled_dot_product_attention when
    `fused_attention`. Call on the encoder already on its device."""
    converted = _reduced_precision_copy(encoder, dtype, (nn.LayerNorm, LayerNorm2d))
    for module in converted.modules():
        if isinstance(module, Attention):
            module.use_sdpa = fused_attention
            table = module.bias_table
            if table.numel():
                tokens = table.shape[-1]
                row = -(-tokens // _BIAS_ROW_ALIGNMENT) * _BIAS_ROW_ALIGNMENT
                padded = table.new_zeros(*table.shape[:-1], row)
                padded[..., :tokens] = table
                module.bias_table = padded[..., :tokens]
    return converted


def _swap_layer_norms(module: nn.Module) -> None:
    """Replace every nn.LayerNorm by tiny_vit.LayerNorm (FP32 inside for FP16 input)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.LayerNorm:
                norm = LayerNorm(child.normalized_shape, child.eps, device=child.weight.device)
                norm.load_state_dict(child.state_dict())
                setattr(parent, name, norm)


class MixedPrecisionDecoder(PromptDecoder):
    """PromptDecoder in `dtype` with its sensitive parts in FP32: the prompt encoder (Fourier
    features of the coordinates, mask hints through LayerNorm2d) and the transformer's
    LayerNorms. `mask_input=None` means no hints: the constant no-mask embedding, kept on the
    device, replaces the mask branch."""

    def __init__(self, decoder: PromptDecoder, dtype: torch.dtype = torch.float16) -> None:
        mask_decoder = copy.deepcopy(decoder.mask_decoder)
        _swap_layer_norms(mask_decoder)
        mask_decoder = _reduced_precision_copy(mask_decoder, dtype, (nn.LayerNorm,))
        prompt_encoder = copy.deepcopy(decoder.prompt_encoder).float()
        super().__init__(prompt_encoder, mask_decoder, decoder.multimask)
        self.compute_dtype = dtype
        self.image_pe = self.image_pe.to(dtype)
        no_mask = prompt_encoder.no_mask_embed.weight.detach().reshape(1, -1, 1, 1)
        self.register_buffer("no_mask_dense", no_mask.to(dtype), persistent=False)
        self.eval()

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super()._embed_points(coords, labels).to(self.compute_dtype)

    def _embed_masks(
        self, mask_input: torch.Tensor | None, has_mask_input: torch.Tensor | None
    ) -> torch.Tensor:
        if mask_input is None:
            return self.no_mask_dense
        return super()._embed_masks(mask_input, has_mask_input).to(self.compute_dtype)
