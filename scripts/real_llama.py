#!/usr/bin/env python3
"""Build the real llama.cpp ``llama-server`` and tiny GGUF models into a cache, reusing it.

Usage::

    python scripts/real_llama.py            # build what is missing, print KEY=VALUE paths
    python scripts/real_llama.py --check    # print the paths only if everything is built
    python scripts/real_llama.py --bench    # also two ~400 MB models for benchmarks/real_swap.py

The llama.cpp source comes from the ``llama-cpp-python`` sdist on PyPI (its ``vendor/llama.cpp``),
so nothing but PyPI is needed. Building takes about 7.5 minutes on 2 cores; the result is cached in
``$LLAMA_SWAP_TRIO_CACHE`` (default ``~/.cache/llama-swap-trio``) and never committed.

The models are random-weight llama-architecture GGUFs (n_embd 64, 2 layers, 4 heads, feed-forward
128, context 512) with the tokenizer of llama.cpp's ``ggml-vocab-llama-spm.gguf`` and a simple chat
template: about 17 MB each, healthy in well under a second, and they stream gibberish with real
``usage`` and ``timings``. Two differently seeded chat models and one embeddings model are written.

Output (stdout, one per line): ``LLAMA_SERVER=...``, ``LLAMA_MODEL_A=...``, ``LLAMA_MODEL_B=...``,
``LLAMA_MODEL_EMBED=...``; with ``--bench`` also ``LLAMA_MODEL_MID_A=...`` and
``LLAMA_MODEL_MID_B=...`` (the same architecture at n_embd 1024 and feed-forward 4096, about 400 MB
each, so a swap pays for loading a few hundred MB as well). Exit 0 when built, 3 when ``--check``
finds something missing, 1 on a build failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{SDIST_VERSION}"
MODELS = {"LLAMA_MODEL_A": ("tiny-a.gguf", 1), "LLAMA_MODEL_B": ("tiny-b.gguf", 2)}
EMBED_MODEL = ("tiny-embed.gguf", 3)
#: --bench only: larger models for the swap benchmark (never needed by the tests)
BENCH_MODELS = {"LLAMA_MODEL_MID_A": ("mid-a.gguf", 4), "LLAMA_MODEL_MID_B": ("mid-b.gguf", 5)}
#: (n_embd, n_layer, n_head, n_ff) of the tiny and the --bench models; context 512 for both
TINY_DIMS = (64, 2, 4, 128)
MID_DIMS = (1024, 2, 16, 4096)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def cache_dir() -> Path:
    env = os.environ.get("LLAMA_SWAP_TRIO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "llama-swap-trio"


def paths(*, bench: bool = False) -> dict[str, Path]:
    cache = cache_dir()
    result = {"LLAMA_SERVER": cache / "bin" / "llama-server"}
    for key, (name, _) in MODELS.items():
        result[key] = cache / "models" / name
    result["LLAMA_MODEL_EMBED"] = cache / "models" / EMBED_MODEL[0]
    if bench:
        for key, (name, _) in BENCH_MODELS.items():
            result[key] = cache / "models" / name
    return result


def log(message: str) -> None:
    print(f"real_llama: {message}", file=sys.stderr, flush=True)


def fetch_source(cache: Path) -> Path:
    """The extracted sdist's ``vendor/llama.cpp`` (downloaded with pip once)."""
    source = cache / "src" / SDIST / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").exists():
        return source
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    tarball = downloads / f"{SDIST}.tar.gz"
    if not tarball.exists():
        log(f"downloading the llama-cpp-python {SDIST_VERSION} sdist")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={SDIST_VERSION}",
                "-d",
                str(downloads),
            ],
            check=True,
        )
    log("extracting vendor/llama.cpp")
    with tarfile.open(tarball) as archive:
        members = [
            m for m in archive.getmembers() if m.name.startswith(f"{SDIST}/vendor/llama.cpp")
        ]
        archive.extractall(cache / "src", members=members, filter="data")
    return source


def build_server(source: Path, target: Path) -> None:
    build = cache_dir() / "build"
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SystemExit(
            "real_llama: cmake is needed (apt-get install cmake, or pip install cmake)"
        )
    log("configuring llama.cpp")
    subprocess.run(
        [
            cmake,
            "-S",
            str(source),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DGGML_NATIVE=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log(f"building llama-server with {os.cpu_count()} jobs (several minutes)")
    subprocess.run(
        [cmake, "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "bin" / "llama-server", target)


def write_model(
    source: Path,
    target: Path,
    seed: int,
    *,
    embeddings: bool = False,
    dims: tuple[int, int, int, int] = TINY_DIMS,
) -> None:
    """A random-weight llama GGUF with a real tokenizer (see the module docstring)."""
    sys.path.insert(0, str(source / "gguf-py"))
    import gguf  # type: ignore[import-not-found]
    import numpy as np  # type: ignore[import-not-found]

    vocab = gguf.GGUFReader(str(source / "models" / "ggml-vocab-llama-spm.gguf"))
    n_vocab = len(vocab.fields["tokenizer.ggml.tokens"].data)
    n_embd, n_layer, n_head, n_ff = dims
    n_ctx = 512
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> object:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    writer = gguf.GGUFWriter(str(tmp_path), "llama")
    writer.add_name(target.stem)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for name, field in vocab.fields.items():
        if not name.startswith("tokenizer.") or name == "tokenizer.chat_template":
            continue
        main_type = field.types[0]
        sub_type = field.types[-1] if main_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), main_type, sub_type)
    writer.add_chat_template(CHAT_TEMPLATE)
    if embeddings:
        writer.add_pooling_type(gguf.PoolingType.MEAN)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    for layer in range(n_layer):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{part}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weights(n_vocab, n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp_path.chmod(0o644)
    tmp_path.replace(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether all is built")
    parser.add_argument("--bench", action="store_true", help="also the benchmark's larger models")
    args = parser.parse_args(argv)
    wanted = paths(bench=args.bench)
    missing = [key for key, path in wanted.items() if not path.exists()]
    if missing and args.check:
        log("not built: " + ", ".join(missing))
        return 3
    if missing:
        cache = cache_dir()
        try:
            source = fetch_source(cache)
            if not wanted["LLAMA_SERVER"].exists():
                build_server(source, wanted["LLAMA_SERVER"])
            for key, (_, seed) in MODELS.items():
                if not wanted[key].exists():
                    write_model(source, wanted[key], seed)
            if not wanted["LLAMA_MODEL_EMBED"].exists():
                write_model(source, wanted["LLAMA_MODEL_EMBED"], EMBED_MODEL[1], embeddings=True)
            for key, (_, seed) in BENCH_MODELS.items():
                if key in wanted and not wanted[key].exists():
                    write_model(source, wanted[key], seed, dims=MID_DIMS)
        except (subprocess.CalledProcessError, OSError, ImportError) as error:
            log(f"build failed: {error}")
            return 1
    for key, path in wanted.items():
        print(f"{key}={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
