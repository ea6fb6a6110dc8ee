"""A local stand-in for the Hugging Face hub: the few HTTP requests huggingface_hub makes to
download a model repository (repository info, its file tree, HEAD and GET of each file under
/resolve/), answered from files in memory on 127.0.0.1. Tests point the client at it with
HF_ENDPOINT; every request is logged so they can check what was fetched."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class Hub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos                                  # repo id -> file name -> content
        self.commits = {r: hashlib.sha1(r.encode()).hexdigest() for r in repos}
        self.log: list[tuple[str, str]] = []                # (method, path)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):                   # quiet
                pass

            def do_GET(self):
                hub._answer(self, head=False)

            def do_HEAD(self):
                hub._answer(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloads(self) -> list[str]:
        """Paths of the files fetched with GET (not the API calls)."""
        return [p for m, p in self.log if m == "GET" and "/resolve/" in p]

    @staticmethod
    def _send(h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _answer(self, h, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.log.append(("HEAD" if head else "GET", path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:     # /api/models/{owner}/{name}/(revision|tree)/{rev}
            repo, kind = "/".join(parts[2:4]), parts[4]
            if repo not in self.repos:
                return self._send(h, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            files = self.repos[repo]
            if kind == "tree":
                body = [{"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                        for n, d in sorted(files.items())]
            else:
                body = {"id": repo, "modelId": repo, "sha": self.commits[repo], "private": False, "tags": [],
                        "siblings": [{"rfilename": n} for n in sorted(files)]}
            return self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        if len(parts) >= 5 and parts[2] == "resolve":                 # /{owner}/{name}/resolve/{rev}/{file}
            repo, name = "/".join(parts[:2]), "/".join(parts[4:])
            if repo not in self.repos or name not in self.repos[repo]:
                return self._send(h, 404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            data = self.repos[repo][name]
            return self._send(h, 200, data, {"X-Repo-Commit": self.commits[repo],
                                             "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, head)
        return self._send(h, 404, b"", {}, head)


# config.json as openai-community/gpt2 has it, with the tiny shapes (the loader must ignore the rest)
GPT2_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 128, "n_embd": 64, "n_head": 4,
    "n_layer": 2, "n_positions": 128, "resid_pdrop": 0.1, "summary_activation": None,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
    "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}
# the other files openai-community/gpt2 holds, which gpt2sql must not download
OTHER_FILES = ["README.md", ".gitattributes", "64-8bits.tflite", "64-fp16.tflite", "64.tflite",
               "flax_model.msgpack", "generation_config.json", "onnx/decoder_model.onnx", "pytorch_model.bin",
               "rust_model.ot", "tf_model.h5", "tokenizer.json", "tokenizer_config.json"]
NEEDED = {"config.json", "model.safetensors", "vocab.json", "merges.txt"}


def repo_files(folder: Path) -> dict[str, bytes]:
    files = {n: (folder / n).read_bytes() for n in ("model.safetensors", "vocab.json", "merges.txt")}
    files["config.json"] = json.dumps(GPT2_CONFIG, indent=2).encode()
    files.update({n: b"not needed by gpt2sql: " + n.encode() for n in OTHER_FILES})
    return files
