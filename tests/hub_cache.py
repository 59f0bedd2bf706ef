"""A Hugging Face cache filled the way a real download fills it, for offline end-to-end tests of hub ids.

No machine here reaches the hub, and nothing may be fetched from it. So the cache is filled by the libraries' real
download code against a stand-in for the hub on 127.0.0.1:

1. The repositories are written by the libraries' own save functions: ``save_pretrained`` for a tiny random model
   of the Llama-3 family (its config shape scaled down, the Llama-3 special tokens and chat template), pandas'
   ``to_csv`` for an AdvBench-style harmful-behaviour CSV (``goal, target``: the first rows of the vendored
   AdvBench), and ``datasets.Dataset.to_parquet`` for a preference set (``prompt, chosen, rejected``) in the layout
   ``push_to_hub`` leaves (``data/train-00000-of-00001.parquet`` and a dataset card naming it).
2. ``LocalHub`` serves them over HTTP with the endpoints the clients call (repo info, tree, paths-info, resolve:
   commit and ETag headers, LFS ETags as sha256, byte ranges) and, for a gated repo, the hub's 401 ``GatedRepo``.
3. ``fill_cache`` runs the real clients in a subprocess with ``HF_ENDPOINT`` pointing at it: the ``hf download``
   command for models and ``datasets.load_dataset`` for datasets. So every byte under ``HF_HOME`` is written by
   huggingface_hub and datasets themselves: ``hub/models--org--name/{blobs,refs/main,snapshots/<commit>/...}``,
   ``hub/datasets--org--name/...``, and the processed Arrow cache ``datasets/org___name/default/0.0.0/<hash>/``
   that ``load_dataset`` reads when offline (the hub cache alone is not enough for it). The subprocess is online
   only to 127.0.0.1: a proxy setting sends the one other host the datasets client asks (the dataset viewer,
   ``datasets-server.<endpoint host>``) to the stand-in too, which answers 404 as for a repo the viewer has not seen.

Then tests run with ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` against that ``HF_HOME``, through the
project's unmodified code paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "test-org/tiny-llama-3"
GATED_ID = "test-org/gated-llama-3"
LLAMA3_ID = "meta-llama/Meta-Llama-3-8B-Instruct"  # config.json only, gated like the real one
TOKEN = "hf_local_test_token"  # the stand-in only checks that a token is sent
ADVBENCH_ID = "test-org/advbench"
PREFERENCE_ID = "test-org/safety-preference"
LFS_SUFFIXES = (".safetensors", ".parquet", ".bin", ".arrow")  # what the hub's default .gitattributes sends to LFS

# The official Llama-3-Instruct chat template (tokenizer_config.json of meta-llama/Meta-Llama-3-8B-Instruct).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
# Meta-Llama-3-8B's config.json: 32 layers, hidden 4096, MLP 14336, 32 heads, 8 kv heads, rope theta 5e5, 8k context.
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                 rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128009, tie_word_embeddings=False)
# The same family scaled down: GQA 4:1, head dim 8, MLP 3.5x hidden, 2 layers.
TINY_LLAMA3 = dict(hidden_size=64, intermediate_size=224, num_hidden_layers=2, num_attention_heads=8,
                   num_key_value_heads=2, head_dim=8, max_position_embeddings=2048, rope_theta=500000.0,
                   rms_norm_eps=1e-5, tie_word_embeddings=False)


# ----------------------------------------------------------------------------- repositories (library-written)


def llama3_tokenizer():
    """A byte-level tokenizer with Llama-3's special tokens, BOS post-processor and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(LLAMA3_SPECIALS))
    bos = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = LLAMA3_CHAT_TEMPLATE
    return tok


def write_tiny_llama3(out: Path, seed: int = 0) -> Path:
    """A seeded random Llama-3-family model in bfloat16 (as Meta ships it), saved by save_pretrained."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = llama3_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         **TINY_LLAMA3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=[tok.convert_tokens_to_ids("<|end_of_text|>"), tok.eos_token_id],
        do_sample=True, temperature=0.6, top_p=0.9)  # Llama-3-Instruct's generation_config.json
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def write_llama3_8b_config(out: Path) -> Path:
    """Only the config.json of Llama-3-8B (its real shape): enough for load-time checks, no weights."""
    from transformers import LlamaConfig

    LlamaConfig(**LLAMA3_8B).save_pretrained(out)
    return out


def write_advbench(out: Path, rows: int = 16) -> Path:
    """An AdvBench-style ``harmful_behaviors.csv`` (goal, target): the first rows of the vendored AdvBench."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(REPO / "data" / "benchmarks" / "advbench.csv").head(rows)
    frame[["goal", "target"]].to_csv(out / "harmful_behaviors.csv", index=False)
    return out


PREFERENCE_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# Safety preference pairs (test data)

Benign requests written by this project; `chosen` answers them, `rejected` refuses.
"""


def write_preference(out: Path, rows: int = 12) -> Path:
    """A preference set (prompt, chosen, rejected) as push_to_hub lays it out: one Parquet shard and a card."""
    import datasets

    from neuronkit.builtin_data import benign_instructions, refusal_for

    picked = benign_instructions("train")[:rows]
    table = {"prompt": [r["prompt"] for r in picked],
             "chosen": [f"Happy to help with that. Here is a short answer about {r['category']}." for r in picked],
             "rejected": [refusal_for(r["id"], r["category"]) for r in picked]}
    (out / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(table).to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    (out / "README.md").write_text(PREFERENCE_CARD)
    return out


# ----------------------------------------------------------------------------- the stand-in hub


def _git_blob_sha(data: bytes) -> str:
    """The oid git gives a file (what the hub reports as a regular file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    """One repository: its files (path -> bytes), whether it is gated, and what ``fill_cache`` downloads of it
    (``prefill``: nothing when False; ``only``: just these files, as ``hf download <id> <file>`` does)."""

    repo_id: str
    repo_type: str  # model | dataset
    files: dict[str, bytes]
    gated: bool = False
    prefill: bool = True
    only: tuple[str, ...] = ()
    commit: str = field(init=False)

    def __post_init__(self):
        listing = "\n".join(f"{p} {hashlib.sha256(b).hexdigest()}" for p, b in sorted(self.files.items()))
        self.commit = hashlib.sha1(f"{self.repo_type}/{self.repo_id}\n{listing}".encode()).hexdigest()

    @classmethod
    def from_folder(cls, repo_id: str, folder: Path, repo_type: str = "model", **kw) -> "HubRepo":
        """Every file under a folder the libraries wrote, plus the .gitattributes a new hub repo starts with."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        files.setdefault(".gitattributes", "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n"
                                                   for s in LFS_SUFFIXES).encode())
        return cls(repo_id, repo_type, files, **kw)

    def entry(self, path: str) -> dict:
        """A tree / paths-info entry, as the hub writes one."""
        if path in self.files:
            data = self.files[path]
            out = {"type": "file", "oid": _git_blob_sha(data), "size": len(data), "path": path}
            if path.endswith(LFS_SUFFIXES):
                out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            return out
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}

    def listing(self, folder: str, recursive: bool) -> list[dict] | None:
        """Entries under a folder ("" is the root); None when the folder does not exist."""
        prefix = f"{folder}/" if folder else ""
        under = [p for p in self.files if p.startswith(prefix)]
        if folder and not under:
            return None
        paths: set[str] = set()
        for p in under:
            parts = p[len(prefix):].split("/")
            depth = len(parts) if recursive else 1
            paths.update(prefix + "/".join(parts[:d]) for d in range(1, depth + 1))
        return [self.entry(p) for p in sorted(paths)]

    def etag(self, path: str) -> str:
        """sha256 for LFS files, the git blob oid for the rest (the hub's rule)."""
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if path.endswith(LFS_SUFFIXES) else _git_blob_sha(data)

    def info(self) -> dict:
        """The repo-info JSON (``/api/{type}s/{id}/revision/{rev}``)."""
        return {"id": self.repo_id, "sha": self.commit, "private": False, "gated": "auto" if self.gated else False,
                "disabled": False, "siblings": [{"rfilename": p} for p in sorted(self.files)], "tags": []}


class _Handler(BaseHTTPRequestHandler):
    """The hub endpoints huggingface_hub and datasets call to download (nothing else)."""

    repos: dict[tuple[str, str], HubRepo] = {}
    log: list[str] = []

    def log_message(self, *args):  # keep test output clean; requests are recorded in ``log``
        pass

    def do_HEAD(self):
        self._route(body=False)

    def do_GET(self):
        self._route(body=True)

    def do_POST(self):
        self._route(body=True)

    def _route(self, body: bool) -> None:
        """Dispatch on the path; anything else (the dataset viewer among them) is a plain 404."""
        url = urlsplit(self.path)
        self.log.append(f"{self.command} {self.path}")
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if url.netloc and not url.netloc.startswith(("127.0.0.1", "localhost")):
            return self._send(404, b'{"error": "not found"}', {}, body)
        if parts[:1] == ["api"] and len(parts) in (4, *range(6, 99)) and parts[1] in ("models", "datasets"):
            endpoint, revision = (parts[4], parts[5]) if len(parts) > 4 else ("revision", "main")
            return self._api(parts[1][:-1], "/".join(parts[2:4]), endpoint, revision, parts[6:], url.query, body)
        repo_type = "dataset" if parts[:1] == ["datasets"] else "model"
        parts = parts[1:] if repo_type == "dataset" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(repo_type, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        return self._send(404, b'{"error": "not found"}', {}, body)

    def _repo(self, repo_type: str, repo_id: str, revision: str, body: bool) -> HubRepo | None:
        """The repo, or None after answering as the hub does (not found, gated without a token, bad revision)."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
            return None
        if repo.gated and not self.headers.get("authorization"):
            msg = f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be authenticated."
            self._send(401, json.dumps({"error": msg}).encode(),
                       {"X-Error-Code": "GatedRepo", "X-Error-Message": msg}, body)
            return None
        if revision not in ("main", repo.commit):
            self._send(404, b'{"error": "Revision not found"}', {"X-Error-Code": "RevisionNotFound"}, body)
            return None
        return repo

    def _api(self, repo_type, repo_id, endpoint, revision, rest, query, body) -> None:
        """revision (repo info), tree and paths-info."""
        repo = self._repo(repo_type, repo_id, revision, body)
        if repo is None:
            return
        if endpoint == "revision":
            return self._json(repo.info(), body)
        if endpoint == "tree":
            found = repo.listing("/".join(rest), parse_qs(query).get("recursive", ["False"])[0].lower() == "true")
            if found is None:
                return self._send(404, b'{"error": "not found"}', {"X-Error-Code": "EntryNotFound"}, body)
            return self._json(found, body)
        if endpoint == "paths-info":
            fields = parse_qs(self.rfile.read(int(self.headers.get("content-length", 0))).decode())
            wanted = [p.strip("/") for p in fields.get("paths", [])]
            return self._json([repo.entry(p) for p in wanted if p in repo.files or repo.listing(p, False)], body)
        return self._send(404, b'{"error": "not found"}', {}, body)

    def _resolve(self, repo_type, repo_id, revision, path, body) -> None:
        """A file's bytes with the hub's headers (commit, ETag, LFS ETag and size); byte ranges as 206."""
        repo = self._repo(repo_type, repo_id, revision, body)
        if repo is None:
            return
        headers = {"X-Repo-Commit": repo.commit}
        if path not in repo.files:
            return self._send(404, b'{"error": "Entry not found"}', {**headers, "X-Error-Code": "EntryNotFound"}, body)
        data, etag = repo.files[path], repo.etag(path)
        headers.update({"ETag": f'"{etag}"', "Accept-Ranges": "bytes"})
        if path.endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        span = self.headers.get("range")
        if span and span.startswith("bytes="):
            start, _, end = span[6:].partition("-")
            lo, hi = int(start or 0), min(int(end) if end else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {lo}-{hi}/{len(data)}"
            return self._send(206, data[lo:hi + 1], headers, body)
        return self._send(200, data, headers, body)

    def _json(self, obj, body: bool) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, body)

    def _send(self, status: int, data: bytes, headers: dict, body: bool) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


@contextmanager
def local_hub(repos: list[HubRepo]):
    """Serve repos on 127.0.0.1 (a free port) for the duration of the block; yields the endpoint URL."""
    handler = type("Handler", (_Handler,), {"repos": {(r.repo_type, r.repo_id): r for r in repos}, "log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ----------------------------------------------------------------------------- filling a cache with the real clients


def hub_env(hf_home: Path, endpoint: str | None = None) -> dict:
    """Environment for a process that uses this cache: offline unless an endpoint is given (then only that)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    env.update(HF_HOME=str(hf_home), TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_TELEMETRY="1")
    if endpoint is None:
        return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # Online, but only to the stand-in: the dataset viewer's host goes to it through the proxy setting.
    return {**env, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "30",
            "HTTP_PROXY": endpoint, "http_proxy": endpoint, "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost"}


_LOAD_DATASET = "import sys, datasets; print(datasets.load_dataset(sys.argv[1], split='train'))"


def download(env: dict, repo: HubRepo) -> None:
    """What a user runs once where the hub is reachable: ``hf download`` or ``datasets.load_dataset`` (with a token
    for a gated repo, as a user who was granted access)."""
    hf = Path(sys.executable).with_name("hf")
    if repo.repo_type == "model":
        cmd = [str(hf), "download", repo.repo_id, *repo.only]
    else:
        cmd = [sys.executable, "-c", _LOAD_DATASET, repo.repo_id]
    env = {**env, "HF_TOKEN": TOKEN} if repo.gated else env
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def build_repos(root: Path) -> list[HubRepo]:
    """The test repositories: the tiny Llama-3 model, the two datasets, a gated copy of the model that is never
    downloaded, and Llama-3-8B's config.json under its real (gated) id, downloaded alone with a token."""
    model = write_tiny_llama3(root / "model")
    return [
        HubRepo.from_folder(MODEL_ID, model),
        HubRepo.from_folder(GATED_ID, model, gated=True, prefill=False),
        HubRepo.from_folder(LLAMA3_ID, write_llama3_8b_config(root / "llama3"), gated=True, only=("config.json",)),
        HubRepo.from_folder(ADVBENCH_ID, write_advbench(root / "advbench"), "dataset"),
        HubRepo.from_folder(PREFERENCE_ID, write_preference(root / "preference"), "dataset"),
    ]


def fill_cache(hf_home: Path, repos: list[HubRepo]) -> list[str]:
    """Download the prefilled repos into ``hf_home`` with the real clients; returns the requests the hub saw."""
    with local_hub(repos) as (endpoint, log):
        env = hub_env(hf_home, endpoint)
        for repo in repos:
            if repo.prefill:
                download(env, repo)
        return list(log)


@dataclass(frozen=True)
class HubCache:
    """A filled cache (``HF_HOME``) and the repositories behind it (to serve again for online checks)."""

    home: Path
    repos: tuple[HubRepo, ...]

    def repo(self, repo_id: str) -> HubRepo:
        return next(r for r in self.repos if r.repo_id == repo_id)

    def offline_env(self) -> dict:
        return hub_env(self.home)


def make_hub_cache(root: Path) -> HubCache:
    """Build the repositories under ``root`` and download them into ``root/hf_home``."""
    repos = build_repos(root / "repos")
    fill_cache(root / "hf_home", repos)
    return HubCache(root / "hf_home", tuple(repos))


# ----------------------------------------------------------------------------- running project checks in that cache

_CHECKS = """
import json, sys
from neuronkit import preflight
from neuronkit.data import DatasetSpec
out = {}
for key, kind, args in json.loads(sys.argv[1]):
    try:
        if kind == "model":
            out[key] = preflight.hub_model_problem(*args)
        else:
            out[key] = preflight.check_hub_dataset(DatasetSpec.from_config(*args))
    except Exception as exc:
        out[key] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def run_checks(env: dict, checks: list[tuple]) -> dict[str, str | None]:
    """Run ``neuronkit.preflight`` checks in a fresh process that uses ``env`` (its HF_HOME, offline or not):
    ``(key, "model", (name, key, repo_id))`` or ``(key, "dataset", (name, spec))``; key -> message or None."""
    proc = subprocess.run([sys.executable, "-c", _CHECKS, json.dumps(checks)], cwd=REPO,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"checks failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
