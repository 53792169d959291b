import pytest

from relate_anything import weights
from relate_anything.errors import WeightsNotFoundError


def test_existing_paths_resolve_to_themselves(tmp_path):
    file = tmp_path / "ram_epoch12.pth"
    file.write_bytes(b"")
    assert weights.resolve(file, weights.RAM_WEIGHTS) == file
    assert weights.resolve(str(tmp_path), weights.SAM_WEIGHTS) == tmp_path


def test_missing_path_names_flag_and_env_var(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve(str(tmp_path / "sam_vit_h_4b8939.pth"), weights.SAM_WEIGHTS)
    message = str(info.value)
    assert "does not exist" in message and "--sam" in message and "RELATE_ANYTHING_SAM" in message
    assert "sam_vit_h_4b8939.pth" in message


def test_uncached_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve("facebook/sam-vit-huge", weights.SAM_WEIGHTS)
    message = str(info.value)
    assert "facebook/sam-vit-huge" in message and "HF_HUB_OFFLINE" in message and "--sam" in message


def test_uncached_hub_file_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve(weights.RAM_WEIGHTS.default, weights.RAM_WEIGHTS)
    message = str(info.value)
    assert "ram_epoch12.pth" in message and "--ram" in message and "RELATE_ANYTHING_RAM" in message


def test_cached_hub_file_is_found_offline(tmp_path, monkeypatch):
    """A file already in the Hugging Face cache resolves without the network."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    # The hub cache layout: <cache>/<type>s--owner--repo/{refs/main, snapshots/<rev>/<file>}
    repo = tmp_path / "spaces--owner--demo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    target = repo / "snapshots" / "abc123" / "checkpoints" / "head.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights")
    resolved = weights.resolve("hf://spaces/owner/demo/checkpoints/head.pth", weights.RAM_WEIGHTS)
    assert resolved.read_bytes() == b"weights"


def test_malformed_hf_reference():
    with pytest.raises(WeightsNotFoundError, match="expected hf://"):
        weights.resolve("hf://owner/repo", weights.RAM_WEIGHTS)


def test_env_var_overrides_default(monkeypatch):
    monkeypatch.setenv(weights.RAM_WEIGHTS.env_var, "/models/head.safetensors")
    assert weights.RAM_WEIGHTS.reference() == "/models/head.safetensors"
    assert weights.RAM_WEIGHTS.reference("given.pth") == "given.pth"
    monkeypatch.delenv(weights.RAM_WEIGHTS.env_var)
    assert weights.RAM_WEIGHTS.reference() == weights.RAM_WEIGHTS.default
