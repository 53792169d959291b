import hashlib
import http.server
import os
import shutil
import socket
import threading
import time
from pathlib import Path

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


# -- every missing weight at once, fast without network ------------------------------------------


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """No weights cached, no weights from the environment."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for kind in (weights.SAM_WEIGHTS, weights.RAM_WEIGHTS, weights.LABELER_WEIGHTS):
        monkeypatch.delenv(kind.env_var, raising=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: connections are refused


def test_every_missing_weight_is_named_in_one_message(tmp_path, empty_hub_cache):
    references = [
        (weights.SAM_WEIGHTS.default, weights.SAM_WEIGHTS),
        (str(tmp_path / "ram_epoch12.pth"), weights.RAM_WEIGHTS),
        (weights.LABELER_WEIGHTS.default, weights.LABELER_WEIGHTS),
    ]
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve_all(references)
    message = str(info.value)
    assert message.startswith("3 models' weights are missing:\n- SAM weights 'facebook/sam-vit-huge'")
    for reference, kind in references:  # in the order given, each with its flag and variable
        assert f"{kind.name} weights {reference!r}" in message
        assert f"{kind.flag} PATH" in message and kind.env_var in message
    assert message.index("SAM weights") < message.index("RAM relation head") < message.index("labeler")
    assert "HF_HUB_OFFLINE=1" in message and "does not exist" in message


def test_without_network_the_message_comes_at_once(empty_hub_cache, monkeypatch):
    """A hub that cannot be reached (here: a closed port) is found out by one short connection
    test, not by huggingface_hub's retries (1 + 2 + 4 + 8 + 8 s for each file)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve_all([(kind.default, kind) for kind in (weights.SAM_WEIGHTS, weights.RAM_WEIGHTS)])
    assert time.perf_counter() - started < 3.0
    message = str(info.value)
    assert message.count(f"{endpoint} cannot be reached") == 2 and "--sam" in message and "--ram" in message


def test_the_connection_test_goes_through_a_configured_proxy(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    port = _closed_port()
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert weights.hub_unreachable() == (
        f"the proxy 127.0.0.1:{port} for https://huggingface.co cannot be reached (Connection refused)"
    )
    with socket.socket() as listening:  # a proxy that answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert weights.hub_unreachable() is None


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A local stand-in for the Hugging Face hub serving one Space file, as huggingface_hub
    downloads it (HEAD for the commit and ETag, then GET); yields (content, requests)."""
    content = os.urandom(200_000)
    digest = hashlib.sha256(content).hexdigest()
    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def _head(self) -> bool:
            requests.append((self.command, self.path))
            if self.path != "/spaces/owner/demo/resolve/main/checkpoints/head.pth":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            self.send_response(200)
            self.send_header("X-Repo-Commit", "c0ffee" * 6 + "c0ff")
            self.send_header("ETag", f'"{digest}"')  # a large (LFS) file's ETag is its sha256
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            return True

        def do_HEAD(self):
            self._head()

        def do_GET(self):
            if self._head():
                self.wfile.write(content)

        def log_message(self, *args):
            pass

    from huggingface_hub import constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    yield content, requests
    server.shutdown()
    server.server_close()


def test_a_download_shows_its_progress_and_is_cached(fake_hub, monkeypatch, capfd, tmp_path):
    content, requests = fake_hub
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub draws bars on terminals only, unless told so
    path = weights.resolve("hf://spaces/owner/demo/checkpoints/head.pth", weights.RAM_WEIGHTS)
    assert path.read_bytes() == content
    bar = capfd.readouterr().err
    assert "head.pth" in bar and "100%" in bar  # a bar for the file, not switched off
    # Cached: the same reference resolves without the hub, and with the hub gone.
    requests.clear()
    assert weights.resolve("hf://spaces/owner/demo/checkpoints/head.pth", weights.RAM_WEIGHTS) == path
    assert requests == []
    # The hub copy and a copy on disk are the same weights.
    copy = tmp_path / "head.pth"
    copy.write_bytes(content)
    assert weights.fingerprint(path) == weights.fingerprint(copy) == f"sha256:{hashlib.sha256(content).hexdigest()}"


# -- fingerprints -------------------------------------------------------------------------------


def test_fingerprints_follow_the_content_not_the_name(tmp_path, monkeypatch):
    folder = tmp_path / "sam"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "sam"}')
    (folder / "model.safetensors").write_bytes(b"\x01" * 1000)
    (folder / "README.md").write_text("notes")  # not read by any loader
    head = tmp_path / "head.pth"
    head.write_bytes(b"\x02" * 500)
    monkeypatch.chdir(tmp_path)
    assert (
        weights.fingerprint("head.pth")
        == weights.fingerprint(head)
        == weights.fingerprint(Path("..") / tmp_path.name / "head.pth")
    )
    same = shutil.copytree(folder, tmp_path / "copy")
    (same / "README.md").write_text("other notes")
    assert weights.fingerprint(folder) == weights.fingerprint(same) == weights.fingerprint("sam")
    (same / "model.safetensors").write_bytes(b"\x01" * 999 + b"\x00")
    assert weights.fingerprint(folder) != weights.fingerprint(same)
    (same / "model.safetensors").write_bytes(b"\x01" * 1000)
    (same / "config.json").write_text('{"model_type": "sam", "x": 1}')
    assert weights.fingerprint(folder) != weights.fingerprint(same)
    assert weights.fingerprint(head).startswith("sha256:") and weights.fingerprint(head) != weights.fingerprint(folder)
