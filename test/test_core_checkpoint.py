"""Checkpoint download (against a loopback HTTP server), verification and error messages."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from mobilesam_ros.core.errors import CheckpointError, DownloadError
from mobilesam_ros.core.model import checkpoint as ckpt


class _Server:
    """Serves files from a dict on 127.0.0.1 (path -> bytes); counts requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = _Server({})
    yield s
    s.close()


def _source_for(data: bytes, url: str) -> ckpt.CheckpointSource:
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return ckpt.CheckpointSource(
        url, "mobile_sam.pt", len(data), git_sha1, hashlib.md5(data).hexdigest()
    )


def _no_partials(folder: Path) -> bool:
    return not any(p.name.endswith(".part") for p in folder.iterdir())


def test_official_source_is_the_published_file():
    source = ckpt.OFFICIAL_CHECKPOINT
    assert (
        source.url == "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    )
    assert (source.size, source.git_blob_sha1, source.md5) == (
        40_728_226,
        "7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7",
        "f3c0d8cda613564d499310dab6c812cd",
    )


def test_download_verifies_and_renames_into_place(server, random_checkpoint, tmp_path):
    data = random_checkpoint.read_bytes()
    server.files["/weights/mobile_sam.pt"] = data
    target = tmp_path / "cache" / "mobile_sam.pt"
    path = ckpt.download_checkpoint(_source_for(data, server.url("/weights/mobile_sam.pt")), target)
    assert path == target and target.read_bytes() == data
    assert _no_partials(target.parent)


def test_resolve_downloads_once_into_cache(server, random_checkpoint, tmp_path, monkeypatch):
    data = random_checkpoint.read_bytes()
    server.files["/mobile_sam.pt"] = data
    source = _source_for(data, server.url("/mobile_sam.pt"))
    monkeypatch.setattr(ckpt, "OFFICIAL_CHECKPOINT", source)
    first = ckpt.resolve_checkpoint(None, tmp_path, progress=True)
    second = ckpt.resolve_checkpoint(None, tmp_path, progress=False)
    assert first == second == tmp_path / "mobile_sam.pt"
    assert server.requests == 1


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(ckpt.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ckpt.default_cache_dir() == tmp_path / "xdg" / "mobilesam_ros"
    monkeypatch.setenv(ckpt.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert ckpt.default_cache_dir() == tmp_path / "mine"


def test_truncated_download_is_refused(server, random_checkpoint, tmp_path):
    data = random_checkpoint.read_bytes()
    server.files["/short.pt"] = data[: len(data) // 2]
    target = tmp_path / "mobile_sam.pt"
    with pytest.raises(DownloadError, match="truncated"):
        ckpt.download_checkpoint(_source_for(data, server.url("/short.pt")), target, progress=False)
    assert not target.exists() and _no_partials(tmp_path)


def test_wrong_hash_is_refused(server, random_checkpoint, tmp_path):
    data = random_checkpoint.read_bytes()
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0xFF
    server.files["/tampered.pt"] = bytes(tampered)
    target = tmp_path / "mobile_sam.pt"
    with pytest.raises(DownloadError, match="does not match"):
        ckpt.download_checkpoint(
            _source_for(data, server.url("/tampered.pt")), target, progress=False
        )
    assert not target.exists() and _no_partials(tmp_path)


def test_oversized_download_is_refused(server, tmp_path):
    server.files["/big.pt"] = b"x" * 2048
    source = _source_for(b"x" * 1024, server.url("/big.pt"))
    with pytest.raises(DownloadError, match="more than"):
        ckpt.download_checkpoint(source, tmp_path / "mobile_sam.pt", progress=False)
    assert _no_partials(tmp_path)


def test_offline_error_names_url_and_destination(tmp_path):
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mobile_sam.pt"
    target = tmp_path / "mobile_sam.pt"
    with pytest.raises(DownloadError) as error:
        ckpt.download_checkpoint(_source_for(b"abc", url), target, progress=False)
    assert url in str(error.value) and str(target) in str(error.value)
    assert "checkpoint" in str(error.value)


def test_missing_checkpoint_path():
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.resolve_checkpoint("/nonexistent/mobile_sam.pt")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_truncated_checkpoint_is_explained(random_checkpoint, tmp_path):
    pytest.importorskip("torch")  # a truncated checkpoint is recognized by torch.load failing
    data = random_checkpoint.read_bytes()
    path = _write(tmp_path / "cut.pt", data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_state_dict(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
        (b"<!DOCTYPE html><html>Not Found</html>", "HTML page"),
        (b"\x08\x07\x12\x07pytorch", "not a PyTorch checkpoint"),
    ],
)
def test_non_checkpoints_are_explained(tmp_path, content, expected):
    pytest.importorskip("torch")
    with pytest.raises(CheckpointError, match=expected):
        ckpt.load_state_dict(_write(tmp_path / "file.pt", content))


def test_sam_vit_h_checkpoint_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(1280, 3, 16, 16),
        "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(3840, 1280),
        "mask_decoder.iou_token.weight": torch.zeros(1, 256),
    }
    torch.save(state, tmp_path / "sam_vit_h.pth")
    with pytest.raises(CheckpointError, match="SAM ViT-H"):
        ckpt.split_model_parts(ckpt.load_state_dict(tmp_path / "sam_vit_h.pth"))


def test_unrelated_state_dict_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match="not a MobileSAM checkpoint"):
        ckpt.split_model_parts(ckpt.load_state_dict(tmp_path / "resnet.pt"))


def test_strict_key_and_shape_matching(random_checkpoint, tmp_path):
    torch = pytest.importorskip("torch")
    from mobilesam_ros.core.model.modules import load_modules

    state = torch.load(random_checkpoint, weights_only=True)
    missing = dict(state)
    del missing["image_encoder.layers.1.blocks.0.attn.qkv.weight"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing 1 \(e.g. image_encoder.layers.1.blocks.0"):
        load_modules(tmp_path / "missing.pt")

    misshaped = dict(state)
    misshaped["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    torch.save(misshaped, tmp_path / "misshaped.pt")
    with pytest.raises(CheckpointError, match=r"wrong shape: mask_decoder\.iou_token\.weight"):
        load_modules(tmp_path / "misshaped.pt")

    extra = dict(state)
    extra["prompt_encoder.extra.weight"] = torch.zeros(1)
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected 1"):
        load_modules(tmp_path / "extra.pt")


def test_wrapped_state_dict_is_unwrapped(random_checkpoint, tmp_path):
    torch = pytest.importorskip("torch")
    state = torch.load(random_checkpoint, weights_only=True)
    torch.save({"model": state, "epoch": torch.tensor(3)}, tmp_path / "wrapped.pt")
    assert set(ckpt.load_state_dict(tmp_path / "wrapped.pt")) == set(state)
