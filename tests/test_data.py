import hashlib
import lzma
import sys
import types
from pathlib import Path

import pytest

from compressors.quality import data
from compressors.quality.data import DataError, load_sst2, resolve_data_dir

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_mirror(root: Path, train: str, dev: str) -> Path:
    folder = root / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(train)
    (folder / "dev.tsv").write_text(dev)
    return root


@pytest.fixture(autouse=True)
def fresh_loader_cache(monkeypatch):
    data._load_sst2_cached.cache_clear()
    data._load_wikitext_cached.cache_clear()
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    yield
    data._load_sst2_cached.cache_clear()
    data._load_wikitext_cached.cache_clear()


def test_reads_glue_tsv_with_stray_carriage_returns(tmp_path):
    # The real GLUE train file ends sentences with "\r" before the tab; it must not split lines.
    root = write_mirror(tmp_path, "sentence\tlabel\ngood film \r\t1\nbad \" quote\t0\n", "sentence\tlabel\nok\t1\n")
    split = load_sst2("train", root, verify=False)
    assert split.sentences == ("good film", 'bad " quote')
    assert split.labels == (1, 0)


def test_checksum_mismatch_names_file_and_remedy(tmp_path):
    root = write_mirror(tmp_path, "sentence\tlabel\nx\t1\n", "sentence\tlabel\nx\t1\n")
    with pytest.raises(DataError) as info:
        load_sst2("dev", root)
    message = str(info.value)
    assert "dev.tsv" in message and "sha256" in message and "--data-dir" in message


def test_missing_file_says_how_to_get_it(tmp_path):
    (tmp_path / "glue").mkdir()
    with pytest.raises(DataError, match=r"dev\.tsv is missing.*--data-dir"):
        load_sst2("dev", tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")


def test_env_variable_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()


@pytest.mark.parametrize("row", ["just a sentence", "sentence\t2", "a\tb\tc"])
def test_malformed_rows_name_the_line(tmp_path, row):
    root = write_mirror(tmp_path, "sentence\tlabel\nfine\t1\n" + row + "\n", "sentence\tlabel\nx\t1\n")
    with pytest.raises(DataError, match=r"train\.tsv:3"):
        load_sst2("train", root, verify=False)


def test_bad_header(tmp_path):
    root = write_mirror(tmp_path, "text\tlabel\nx\t1\n", "sentence\tlabel\nx\t1\n")
    with pytest.raises(DataError, match="expected header"):
        load_sst2("train", root, verify=False)


def test_unknown_split_lists_choices():
    with pytest.raises(DataError, match="valid splits: train, dev"):
        load_sst2("test")


def test_checksum_changes_with_content(tmp_path):
    a = write_mirror(tmp_path / "a", "sentence\tlabel\nx\t1\n", "sentence\tlabel\nx\t1\n")
    b = write_mirror(tmp_path / "b", "sentence\tlabel\nx\t0\n", "sentence\tlabel\nx\t1\n")
    assert load_sst2("train", a, verify=False).checksum != load_sst2("train", b, verify=False).checksum


@pytest.mark.skipif(not (SHARED / "glue").is_dir(), reason="shared data mirror not beside the repository")
def test_shared_mirror_matches_published_counts():
    dev = load_sst2("dev", SHARED)
    assert len(dev) == 872 and sum(dev.labels) == 444
    assert hashlib.sha256((SHARED / "glue/SST-2/dev.tsv").read_bytes()).hexdigest() == data.SST2_FILES["dev"].sha256
    # the shipped copy reads to the very same rows as the mirror, so caches keyed on the checksum are shared
    assert load_sst2("dev").checksum == dev.checksum


# ----------------------------------------------------------------------------- the copy shipped in the package

def test_embedded_sst2_is_the_default_and_has_the_published_counts():
    dev, train = load_sst2("dev"), load_sst2("train")
    assert (len(dev), sum(dev.labels)) == (872, 444) and (len(train), sum(train.labels)) == (67349, 37569)
    assert dev.source == "embedded:glue/SST-2/dev.tsv" and train.source == "embedded:glue/SST-2/train.tsv"
    # parsed exactly as a mirror file is: the stray carriage returns of GLUE's train file stay out
    assert not any("\r" in s or s != s.strip() for s in train.sentences)


def test_embedded_files_decompress_to_the_published_sha256():
    for spec in (*data.SST2_FILES.values(), *data.WIKITEXT_FILES.values()):
        raw = data.embedded_bytes(spec, spec.relpath)
        assert hashlib.sha256(raw).hexdigest() == spec.sha256
    # and nothing else ships beside them than the four files and their README
    shipped = sorted(str(p.relative_to(data.EMBEDDED_DIR)) for p in data.EMBEDDED_DIR.rglob("*") if p.is_file())
    assert shipped == sorted(["README.md"] + [spec.relpath + ".xz" for spec in
                                              (*data.SST2_FILES.values(), *data.WIKITEXT_FILES.values())])


def test_embedded_wikitext_reads_like_the_mirror_file(tmp_path):
    test = data.load_wikitext("test")
    assert test.rows == 2891 and test.source == "embedded:wikitext-2-raw/wiki.test.raw"
    # the same rows a mirror file gives (universal newlines, blank rows as ""): write the bytes out and compare
    spec = data.WIKITEXT_FILES["test"]
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / spec.relpath).write_bytes(data.embedded_bytes(spec, "test"))
    assert data.load_wikitext("test", tmp_path).checksum == test.checksum
    valid = data.load_wikitext("valid")
    assert "<unk>" in valid.text and "<unk>" not in test.text


def _ship(folder: Path, relpath: str, payload: bytes) -> Path:
    path = folder / (relpath + ".xz")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_a_damaged_embedded_file_stops_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "EMBEDDED_DIR", tmp_path)
    edited = _ship(tmp_path, "glue/SST-2/dev.tsv", lzma.compress(b"sentence\tlabel\nedited\t1\n"))
    with pytest.raises(DataError) as info:
        load_sst2("dev")
    message = str(info.value)
    assert str(edited) in message and "sha256" in message and data.SST2_FILES["dev"].sha256 in message
    garbled = _ship(tmp_path, "wikitext-2-raw/wiki.test.raw", b"not xz at all")
    with pytest.raises(DataError, match="is not a readable xz file") as info:
        data.load_wikitext("test")
    assert str(garbled) in str(info.value)
    with pytest.raises(DataError, match=r"GLUE SST-2 train: .*train\.tsv\.xz, shipped with compressbench, is missing"):
        load_sst2("train")


def test_embedded_file_is_checked_even_when_verify_is_off(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "EMBEDDED_DIR", tmp_path)
    _ship(tmp_path, "glue/SST-2/dev.tsv", lzma.compress(b"sentence\tlabel\nedited\t1\n"))
    with pytest.raises(DataError, match="does not decompress to the published"):
        load_sst2("dev", verify=False)


def test_precedence_flag_then_variable_then_embedded(tmp_path, monkeypatch):
    by_flag = write_mirror(tmp_path / "flag", "sentence\tlabel\nx\t1\n", "sentence\tlabel\nfrom the flag\t1\n")
    by_env = write_mirror(tmp_path / "env", "sentence\tlabel\nx\t1\n", "sentence\tlabel\nfrom the variable\t0\n")
    assert resolve_data_dir(None) == data.EMBEDDED
    assert load_sst2("dev", verify=False).source == "embedded:glue/SST-2/dev.tsv"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(by_env))
    assert resolve_data_dir(None) == by_env.resolve()
    assert load_sst2("dev", verify=False).sentences == ("from the variable",)
    assert resolve_data_dir(by_flag) == by_flag.resolve()
    assert load_sst2("dev", by_flag, verify=False).sentences == ("from the flag",)
    # the words choose a source over the variable too, and a resolved value resolves to itself
    assert resolve_data_dir("embedded") == data.EMBEDDED and resolve_data_dir("hub") == data.HUB
    assert resolve_data_dir(resolve_data_dir(by_flag)) == by_flag.resolve()
    monkeypatch.setenv(data.DATA_DIR_ENV, "hub")
    assert resolve_data_dir(None) == data.HUB


def test_hub_is_an_explicit_choice(monkeypatch):
    calls = []

    def load_dataset(*args, split):
        calls.append((*args, split))
        return {"sentence": ["fine"], "label": [1]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    dev = load_sst2("dev", "hub")
    assert calls == [("glue", "sst2", "validation")] and dev.source == "hub:glue/sst2/validation"
    assert dev.sentences == ("fine",)


def test_an_explicit_missing_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    for where in ("flag", "variable"):
        missing = tmp_path / f"no-such-{where}"
        if where == "variable":
            monkeypatch.setenv(data.DATA_DIR_ENV, str(missing))
        with pytest.raises(DataError, match="does not exist") as info:
            load_sst2("dev", missing if where == "flag" else None)
        assert str(missing) in str(info.value)


def test_settings_keep_the_source_words_and_resolve_folders(tmp_path):
    from compressors.core.settings import BY_NAME, resolve_settings

    assert set(BY_NAME["data_dir"].words) == {data.HUB, data.EMBEDDED}
    for word in (data.HUB, data.EMBEDDED):
        assert resolve_settings({}, {"data-dir": word}, tmp_path / "pyproject.toml").data_dir == word
    folder = resolve_settings({}, {"data-dir": "mirror"}, tmp_path / "pyproject.toml").data_dir
    assert folder == str((tmp_path / "mirror").resolve())


def test_held_apart_slice_is_disjoint_from_the_embedded_fine_tune_sample():
    from compressors.builders.models import MINILM_SST2_RECIPE
    from compressors.builders.training import sample_indices
    from compressors.quality.data import TextClassificationSplit, split_held_apart

    n_total = data.SST2_FILES["train"].rows
    train = TextClassificationSplit("train", tuple(str(i) for i in range(n_total)), (0,) * n_total, "toy", "x")
    rest, held = split_held_apart(train)
    held_ids = {int(s) for s in held.sentences}
    assert len(held_ids) == 1000 and len(rest) == n_total - 1000
    assert not held_ids & {int(s) for s in rest.sentences}
    fine_tune = set(sample_indices(n_total, MINILM_SST2_RECIPE.n_sentences, MINILM_SST2_RECIPE.seed))
    assert not held_ids & fine_tune
    with pytest.raises(data.DataError, match="held-apart size"):
        split_held_apart(train, n=0)


# ----------------------------------------------------------------------------- WikiText-2

def test_wikitext_rows_are_joined_like_the_reference_tooling(tmp_path):
    # datasets' wikitext builder yields one row per line with its newline, "" for blank lines;
    # the Hugging Face perplexity guide joins the rows with "\n\n".
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_bytes(b" = Title = \r\n \r\n Some text .\r\n")
    corpus = data.load_wikitext("test", tmp_path, verify=False)
    assert corpus.text == " = Title = \n\n\n\n\n Some text .\n"
    assert corpus.rows == 3 and corpus.checksum == hashlib.sha256(corpus.text.encode()).hexdigest()


def test_wikitext_checksum_mismatch_and_missing_file_say_how_to_fix(tmp_path):
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_text("edited\n")
    with pytest.raises(DataError, match=r"wiki.test.raw does not match the published WikiText-2 test file.*--data-dir"):
        data.load_wikitext("test", tmp_path)
    with pytest.raises(DataError, match=r"WikiText-2 valid split not found: .*wiki.valid.tokens is missing"):
        data.load_wikitext("valid", tmp_path)
    with pytest.raises(DataError, match="unknown WikiText-2 split 'train'; valid splits: test, valid"):
        data.load_wikitext("train", tmp_path)


@pytest.mark.skipif(not (SHARED / "wikitext-2-raw" / "wiki.test.raw").is_file(), reason="no shared data mirror")
def test_shared_wikitext_mirror_verifies():
    test = data.load_wikitext("test", SHARED)
    valid = data.load_wikitext("valid", SHARED)
    assert test.rows == 2891 and test.source.endswith("wiki.test.raw")
    assert "<unk>" in valid.text and "<unk>" not in test.text  # calibration text is the tokenized validation split
    # the shipped copy reads to the same text as the mirror
    assert data.load_wikitext("test").checksum == test.checksum
    assert data.load_wikitext("valid").checksum == valid.checksum
