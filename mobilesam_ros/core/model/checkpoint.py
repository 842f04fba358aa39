"""Finding, downloading, verifying and reading MobileSAM checkpoints.

Downloading and hashing need only the standard library (and tqdm for the progress bar);
reading the tensors needs PyTorch and is imported lazily.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mobilesam_ros.core.errors import CheckpointError, DownloadError
from mobilesam_ros.core.files import write_atomically
from mobilesam_ros.core.progress import Progress

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

CACHE_DIR_ENV = "MOBILESAM_ROS_CACHE"
CHECKPOINT_URL_ENV = "MOBILESAM_ROS_CHECKPOINT_URL"


@dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint is published and the digests that identify it."""

    url: str
    filename: str
    size: int
    git_blob_sha1: str
    md5: str


OFFICIAL_CHECKPOINT = CheckpointSource(
    url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
    filename="mobile_sam.pt",
    size=40_728_226,
    git_blob_sha1="7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7",
    md5="f3c0d8cda613564d499310dab6c812cd",
)

# Keys of TinyViT's ImageNet classifier that the official checkpoint carries but SAM never uses.
UNUSED_ENCODER_KEYS = frozenset({"norm_head.weight", "norm_head.bias", "head.weight", "head.bias"})
MODEL_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
_SAM_VIT_VARIANTS = {768: "SAM ViT-B", 1024: "SAM ViT-L", 1280: "SAM ViT-H"}
_CHUNK_BYTES = 1 << 20


def default_cache_dir() -> Path:
    """$MOBILESAM_ROS_CACHE, else $XDG_CACHE_HOME/mobilesam_ros, else ~/.cache/mobilesam_ros."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "mobilesam_ros"


def resolve_checkpoint(
    checkpoint: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Return the path of a checkpoint, downloading the official one when none is given."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
        return path
    source = OFFICIAL_CHECKPOINT
    url = os.environ.get(CHECKPOINT_URL_ENV) or source.url
    if url != source.url:
        source = CheckpointSource(
            url, source.filename, source.size, source.git_blob_sha1, source.md5
        )
    target_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = target_dir / source.filename
    if target.is_file() and target.stat().st_size == source.size:
        return target
    return download_checkpoint(source, target, progress=progress)


def download_checkpoint(source: CheckpointSource, target: Path, progress: bool = True) -> Path:
    """Download `source` to `target`, verify size and digests, then rename it into place.

    The file is written under a temporary name in the target folder (`write_atomically`), so an
    interrupted or failed download never leaves a partial file at `target`, and concurrent
    downloads do not see each other's halves.
    """
    offline_hint = (
        f"Without network access, download the file on another machine and copy it to "
        f"{target}, or pass the path of a local copy as the `checkpoint` parameter."
    )
    md5 = hashlib.md5()
    git_sha1 = hashlib.sha1(b"blob %d\0" % source.size)

    def download_into(part: Path) -> None:  # raising discards the partial file
        received = 0
        with open(part, "wb") as out:
            try:
                response = urllib.request.urlopen(source.url, timeout=30)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(
                    f"cannot download {source.url}: {reason}. {offline_hint}"
                ) from exc
            with response, _progress_bar(source, enabled=progress) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    received += len(chunk)
                    if received > source.size:
                        raise DownloadError(
                            f"{source.url} sent more than the expected {source.size} bytes; "
                            f"this is not the published {source.filename}. {offline_hint}"
                        )
                    out.write(chunk)
                    md5.update(chunk)
                    git_sha1.update(chunk)
                    bar.update(len(chunk))
        if received != source.size:
            raise DownloadError(
                f"download of {source.url} is truncated: {received} of {source.size} bytes. "
                f"Run again to retry. {offline_hint}"
            )
        if git_sha1.hexdigest() != source.git_blob_sha1 or md5.hexdigest() != source.md5:
            raise DownloadError(
                f"{source.url} does not match the published {source.filename} "
                f"(MD5 {md5.hexdigest()}, expected {source.md5}); the file was discarded. "
                f"{offline_hint}"
            )

    write_atomically(target, download_into)
    return target


def _progress_bar(source: CheckpointSource, enabled: bool) -> Progress:
    return Progress(source.size, f"downloading {source.filename}", _log, enabled=enabled)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_unreadable(path: Path, exc: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    size = path.stat().st_size
    if size == 0:
        return f"{path} is empty; delete it and download mobile_sam.pt again"
    if head.startswith(b"version https://git-lfs"):
        return (
            f"{path} is a Git LFS pointer, not the weights; download the file itself "
            f"({OFFICIAL_CHECKPOINT.url})"
        )
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return f"{path} is an HTML page (a failed download?), not a checkpoint"
    if head.startswith(b"PK\x03\x04"):
        truncated = " (" + f"{size} bytes; the official file has {OFFICIAL_CHECKPOINT.size})"
        return (
            f"{path} is a damaged or truncated PyTorch checkpoint{truncated}: {exc}. "
            "Delete it and download it again"
        )
    if head[:1] == b"\x80":
        return f"{path} is a damaged pickle or a file torch.load cannot read safely: {exc}"
    return (
        f"{path} is not a PyTorch checkpoint (it starts with {head[:8]!r}); "
        "pass MobileSAM's mobile_sam.pt"
    )


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors with `torch.load(weights_only=True)`, explaining failures."""
    import torch

    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise CheckpointError(_describe_unreadable(path, exc)) from exc
    if isinstance(loaded, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = loaded.get(wrapper)
            if isinstance(inner, Mapping) and any(
                str(k).startswith("image_encoder.") for k in inner
            ):
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state dict of tensors"
        )
    return dict(loaded)


def split_model_parts(
    state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, dict[str, torch.Tensor]]:
    """Split a SAM-layout state dict into its three parts, refusing other models by name."""
    encoder_keys = {k for k in state_dict if k.startswith("image_encoder.")}
    if "image_encoder.patch_embed.proj.weight" in state_dict:
        width = int(state_dict["image_encoder.patch_embed.proj.weight"].shape[0])
        variant = _SAM_VIT_VARIANTS.get(width, f"SAM ViT ({width} channels)")
        raise CheckpointError(
            f"{source} is a {variant} checkpoint. This package runs MobileSAM (TinyViT image "
            f"encoder); use mobile_sam.pt ({OFFICIAL_CHECKPOINT.url})."
        )
    if not encoder_keys or "image_encoder.layers.0.blocks.0.conv1.c.weight" not in state_dict:
        sample = ", ".join(sorted(state_dict)[:3]) or "no keys"
        raise CheckpointError(
            f"{source} is not a MobileSAM checkpoint (first keys: {sample}); "
            f"use mobile_sam.pt ({OFFICIAL_CHECKPOINT.url})."
        )
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in MODEL_PARTS}
    unknown = []
    for key, tensor in state_dict.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts:
            parts[prefix][rest] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source} has keys outside SAM's three parts: {unknown[:5]}")
    return parts


def match_state_dict(
    module: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    part: str,
    optional_keys: frozenset[str] = frozenset(),
) -> None:
    """Load `tensors` into `module`, failing on any missing, unexpected or misshaped key."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected) - optional_keys)
    misshaped = [
        f"{k}: {tuple(tensors[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} (e.g. {part}.{missing[0]})")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} (e.g. {part}.{unexpected[0]})")
        if misshaped:
            problems.append(f"wrong shape: {part}.{misshaped[0]}")
        raise CheckpointError(
            f"{part} does not match MobileSAM's layout: {'; '.join(problems)}. "
            "Is this another TinyViT size or a fine-tune with a changed architecture?"
        )
    module.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=True)
