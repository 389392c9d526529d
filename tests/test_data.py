import hashlib
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
