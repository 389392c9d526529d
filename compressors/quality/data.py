"""Datasets: SST-2 (GLUE) for classification, WikiText-2 for language models.

Three sources; the first that is chosen wins (``--data-dir`` / ``data_dir``, else the
``COMPRESSBENCH_DATA_DIR`` environment variable, else the default):

1. the files shipped inside this package (``compressors/quality/datafiles/``, xz-compressed,
   sources and licences in its README.md): the default, so an offline clone runs. Each file is
   decompressed in memory when first read and its bytes checked against the published sha256;
2. a local mirror folder laid out like the upstream downloads (``glue/SST-2/train.tsv``,
   ``glue/SST-2/dev.tsv``, ``wikitext-2-raw/wiki.test.raw``, ``wikitext-2/wiki.valid.tokens``);
   every file is checked against its published sha256, and a folder that does not exist is an error;
3. ``hub`` (the word, as folder or variable): ``datasets.load_dataset("glue", "sst2")`` from the
   Hugging Face Hub (or its local cache).

Evaluation uses the dev split only; training, calibration and distillation use
train only (see ``compressors/quality/datafiles/README.md``).

WikiText-2 (:func:`load_wikitext`): perplexity is evaluated on the raw *test* split
(``wikitext-2-raw/wiki.test.raw``); language-model calibration may only use the
tokenized *validation* split (``wikitext-2/wiki.valid.tokens``), never test. From the
hub, ``datasets.load_dataset("wikitext", "wikitext-2-raw-v1" / "wikitext-2-v1")``.
"""


from __future__ import annotations

import hashlib
import io
import lzma
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from compressors import CompressbenchError
from compressors.core.hashing import sha256_file

DATA_DIR_ENV = "COMPRESSBENCH_DATA_DIR"

# The two sources that are not a folder, as --data-dir / $COMPRESSBENCH_DATA_DIR spell them.
HUB = "hub"
EMBEDDED = "embedded"
# The package's own copy of the four files (xz: half gzip's size; decompressing all four takes ~60 ms).
EMBEDDED_DIR = Path(__file__).resolve().with_name("datafiles")
EMBEDDED_SUFFIX = ".xz"

HOW_TO_GET = (
    f"Leave --data-dir and {DATA_DIR_ENV} unset to read the copy shipped with compressbench, point either at "
    "a GLUE-format mirror folder (glue/SST-2/{train,dev}.tsv), or set it to 'hub' to load 'glue/sst2' through "
    "the `datasets` library from the Hugging Face Hub (needs network or a populated HF cache)."
)


@dataclass(frozen=True)
class MirrorFile:
    relpath: str
    sha256: str
    rows: int | None = None


# Published checksums of the files a local mirror must hold and the embedded copies decompress to
# (compressors/quality/datafiles/README.md).
SST2_FILES = {
    "train": MirrorFile("glue/SST-2/train.tsv",
                        "82c18cac2c19d7d59301f6c468c7a84a2b7ab0aa9b7de7a974ceb9d5d64c61db", 67349),
    "dev": MirrorFile("glue/SST-2/dev.tsv",
                      "f7271f7a919ea884ca8563e13ed03028aa44296d1f738c003af3142b9a2188f8", 872),
}
SPLITS = tuple(SST2_FILES)

# "test" is the evaluation text (raw, as perplexity papers and llama.cpp use it); "valid"
# (tokenized, <unk> for rare words) is the only WikiText text calibration may see.
WIKITEXT_FILES = {
    "test": MirrorFile("wikitext-2-raw/wiki.test.raw",
                       "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"),
    "valid": MirrorFile("wikitext-2/wiki.valid.tokens",
                        "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
}
WIKITEXT_HUB = {"test": ("wikitext-2-raw-v1", "test"), "valid": ("wikitext-2-v1", "validation")}
WIKITEXT_HOW_TO = (
    f"Leave --data-dir and {DATA_DIR_ENV} unset to read the copy shipped with compressbench, point either at a "
    "mirror folder holding wikitext-2-raw/wiki.test.raw and wikitext-2/wiki.valid.tokens, or set it to 'hub' to "
    "load 'wikitext' through the `datasets` library (needs network or a populated HF cache)."
)


class DataError(CompressbenchError):
    """A dataset is missing, malformed or does not match its checksum."""


@dataclass(frozen=True)
class TextClassificationSplit:
    """Sentences and integer labels of one split, plus where they came from.

    ``checksum`` identifies the content (sha256 of the sentences and labels as
    read), so caches keyed on it change when the data changes, whatever the source.
    """

    name: str
    sentences: tuple[str, ...]
    labels: tuple[int, ...]
    source: str
    checksum: str
    pairs: tuple[str, ...] | None = None  # the second text of each row (NLI, paraphrase), encoded as a true pair

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def texts(self) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        """``(sentences, pairs)``: what a tokenizer is called with (``tokenizer(sentences, pairs)``)."""
        return self.sentences, self.pairs


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | str:
    """Where the data comes from: the argument, else ``$COMPRESSBENCH_DATA_DIR``, else :data:`EMBEDDED`.

    Returns a mirror folder (a :class:`~pathlib.Path`, checked to exist), :data:`HUB` for the word
    ``hub`` or :data:`EMBEDDED` for ``embedded`` or nothing chosen. Resolving a resolved value
    returns it unchanged.
    """
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return EMBEDDED
    if isinstance(chosen, str) and chosen in (HUB, EMBEDDED):
        return chosen
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist or is not a folder. {HOW_TO_GET}")
    return path


def embedded_bytes(spec: MirrorFile, what: str) -> bytes:
    """The decompressed bytes of the package's copy of ``spec``, checked against its published sha256."""
    path = EMBEDDED_DIR / (spec.relpath + EMBEDDED_SUFFIX)
    if not path.is_file():
        raise DataError(f"{what}: {path}, shipped with compressbench, is missing; reinstall the package, or "
                        f"choose another source. {HOW_TO_GET}")
    try:
        raw = lzma.decompress(path.read_bytes())
    except lzma.LZMAError as exc:
        raise DataError(f"{path} (the {what} file shipped with compressbench) is not a readable xz file "
                        f"({exc}); reinstall the package, or choose another source. {HOW_TO_GET}") from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != spec.sha256:
        raise DataError(f"{path} does not decompress to the published {what} file (sha256 {actual}, expected "
                        f"{spec.sha256}); reinstall the package, or choose another source. {HOW_TO_GET}")
    return raw


def _embedded_source(spec: MirrorFile) -> str:
    return f"{EMBEDDED}:{spec.relpath}"


def content_checksum(sentences, labels, pairs=None) -> str:
    """sha256 of the rows as read (single texts hash as they always did; a pair adds its second text)."""
    digest = hashlib.sha256()
    for i, (sentence, label) in enumerate(zip(sentences, labels, strict=True)):
        digest.update(sentence.encode("utf-8"))
        if pairs is not None:
            digest.update(b"\x1f" + pairs[i].encode("utf-8"))
        digest.update(b"\t%d\n" % label)
    return digest.hexdigest()


_content_checksum = content_checksum


def _read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """Parse a GLUE ``sentence<TAB>label`` file (see :func:`_parse_tsv`)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return _parse_tsv(handle.read(), path)


def _parse_tsv(content: str, path: Path | str) -> tuple[list[str], list[int]]:
    """The sentences and labels of a GLUE ``sentence<TAB>label`` file's text; ``path`` names it in errors.

    Split on the last tab of each line and on ``\\n`` only: the GLUE train file
    ends many sentences with a stray carriage return before the tab, which
    universal-newline or csv readers would take as a line break.
    """
    sentences: list[str] = []
    labels: list[int] = []
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].rstrip("\r").split("\t") if lines else None
    if header != ["sentence", "label"]:
        raise DataError(f"{path}: expected header 'sentence<TAB>label', found {header!r}. {HOW_TO_GET}")
    for line_no, line in enumerate(lines[1:], start=2):
        sentence, tab, label = line.rstrip("\r").rpartition("\t")
        if not tab or label not in ("0", "1"):
            raise DataError(f"{path}:{line_no}: expected 'sentence<TAB>0|1', found {line[:80]!r}. {HOW_TO_GET}")
        # GLUE's TSV pads some sentences with a trailing space (and a CR); the hub copy does not.
        sentences.append(sentence.strip())
        labels.append(int(label))
    return sentences, labels


def _mirror_file(path: Path, sha256: str | None, what: str, how_to: str) -> Path:
    """``path`` of a local mirror file, checked to exist and (``sha256`` given) to be the published one."""
    if not path.is_file():
        raise DataError(f"{what} split not found: {path} is missing. {how_to}")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise DataError(f"{path} does not match the published {what} file (sha256 {actual}, "
                            f"expected {sha256}); replace it with the original. {how_to}")
    return path


def _load_from_mirror(split: str, root: Path, verify: bool) -> TextClassificationSplit:
    spec = SST2_FILES[split]
    path = _mirror_file(root / spec.relpath, spec.sha256 if verify else None, f"GLUE SST-2 {split}", HOW_TO_GET)
    sentences, labels = _read_tsv(path)
    if spec.rows is not None and verify and len(sentences) != spec.rows:
        raise DataError(f"{path}: {len(sentences)} rows, expected {spec.rows}. {HOW_TO_GET}")
    return TextClassificationSplit(split, tuple(sentences), tuple(labels), str(path),
                                   _content_checksum(sentences, labels))


def _load_from_hub(split: str) -> TextClassificationSplit:
    hub_split = {"train": "train", "dev": "validation"}[split]
    try:
        import datasets

        table = datasets.load_dataset("glue", "sst2", split=hub_split)
    except Exception as exc:  # datasets raises many types for "unreachable / not cached"
        raise DataError(f"could not load SST-2 {split} through datasets.load_dataset('glue', 'sst2'): "
                        f"{type(exc).__name__}: {exc}. {HOW_TO_GET}") from exc
    # The hub copy strips the trailing space GLUE's TSV has on some rows; keep as is.
    sentences = [s for s in table["sentence"]]
    labels = [int(x) for x in table["label"]]
    return TextClassificationSplit(split, tuple(sentences), tuple(labels), f"hub:glue/sst2/{hub_split}",
                                   _content_checksum(sentences, labels))


def _load_embedded(split: str) -> TextClassificationSplit:
    spec = SST2_FILES[split]
    source = _embedded_source(spec)
    sentences, labels = _parse_tsv(embedded_bytes(spec, f"GLUE SST-2 {split}").decode("utf-8"), source)
    return TextClassificationSplit(split, tuple(sentences), tuple(labels), source, _content_checksum(sentences, labels))


@lru_cache(maxsize=8)
def _load_sst2_cached(split: str, root: Path | str, verify: bool) -> TextClassificationSplit:
    if root == HUB:
        return _load_from_hub(split)
    if root == EMBEDDED:
        return _load_embedded(split)  # always checked: a damaged install must not pass as the published data
    return _load_from_mirror(split, root, verify)


def load_sst2(split: str, data_dir: str | os.PathLike | None = None, *, verify: bool = True) -> TextClassificationSplit:
    """Load one SST-2 split.

    Args:
        split: ``"train"`` or ``"dev"`` (GLUE's validation split, 872 sentences).
        data_dir: a GLUE-format mirror folder, ``"hub"`` (the Hugging Face Hub) or ``"embedded"``;
            defaults to ``$COMPRESSBENCH_DATA_DIR``, and without either the copy shipped in the package.
        verify: check a mirror file's sha256 against the published one (the shipped copy is always checked).
    """
    if split not in SST2_FILES:
        raise DataError(f"unknown SST-2 split {split!r}; valid splits: {', '.join(SPLITS)}")
    return _load_sst2_cached(split, resolve_data_dir(data_dir), verify)


def subset(split: TextClassificationSplit, indices, name: str) -> TextClassificationSplit:
    """The sentences of ``split`` at ``indices``, as a split of its own (checksummed)."""
    sentences = tuple(split.sentences[i] for i in indices)
    labels = tuple(split.labels[i] for i in indices)
    pairs = None if split.pairs is None else tuple(split.pairs[i] for i in indices)
    return TextClassificationSplit(
        name, sentences, labels, f"{split.source} [{name}]", content_checksum(sentences, labels, pairs), pairs
    )


# Held-apart slice of SST-2 train for decisions made from data (layer sensitivity):
# the *last* HELD_APART_SENTENCES positions of the train split shuffled with seed
# HELD_APART_SEED. Fine-tune recipes with that seed sample the *first* positions of the
# same shuffle (compressors.builders.training.sample_indices), so the embedded model's fine-tune
# (32,000 of 67,349) never saw them, and re-finetunes train on the rest only. Dev stays
# untouched for the final, honest measurement.
HELD_APART_SENTENCES = 1000
HELD_APART_SEED = 0


def split_held_apart(
    train: TextClassificationSplit, n: int = HELD_APART_SENTENCES, seed: int = HELD_APART_SEED
) -> tuple[TextClassificationSplit, TextClassificationSplit]:
    """``(rest, held_apart)``: a seeded slice of ``n`` train sentences and everything else."""
    import random

    if not 0 < n < len(train):
        raise DataError(f"held-apart size {n} must be between 1 and {len(train) - 1} (train has {len(train)})")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held = sorted(order[-n:])
    held_set = set(held)
    rest = [i for i in range(len(train)) if i not in held_set]
    return subset(train, rest, f"{train.name}-rest"), subset(train, held, f"{train.name}-held-apart-{n}")


# --------------------------------------------------------------------------- WikiText-2


@dataclass(frozen=True)
class TextCorpus:
    """One WikiText split as a single string, plus where it came from.

    ``text`` is the split's rows joined with ``"\n\n"``, as the Hugging Face perplexity
    guide does (``"\n\n".join(load_dataset("wikitext", ...)["text"])``); ``checksum`` is
    the sha256 of that text.
    """

    name: str
    text: str
    rows: int
    source: str
    checksum: str


def wikitext_rows(path: Path) -> list[str]:
    """The rows ``datasets``' ``wikitext`` builder yields for a raw file: one per line, with
    its newline, and ``""`` for a line of only whitespace. Joining them with ``"\n\n"``
    gives byte for byte the text the reference tooling evaluates."""
    with open(path, encoding="utf-8") as handle:  # universal newlines, like the builder
        return _wikitext_rows_of(handle)


def _wikitext_rows_of(handle) -> list[str]:
    return [row if row.strip() else "" for row in handle]


def _corpus(name: str, rows: list[str], source: str) -> TextCorpus:
    text = "\n\n".join(rows)
    return TextCorpus(name, text, len(rows), source, hashlib.sha256(text.encode("utf-8")).hexdigest())


@lru_cache(maxsize=4)
def _load_wikitext_cached(split: str, root: Path | str, verify: bool) -> TextCorpus:
    if root == EMBEDDED:  # always checked, like SST-2's shipped copy
        spec = WIKITEXT_FILES[split]
        raw = embedded_bytes(spec, f"WikiText-2 {split}")
        # a text wrapper iterates with universal newlines, exactly as open() does for a mirror file
        rows = _wikitext_rows_of(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
        return _corpus(f"wikitext-2-{split}", rows, _embedded_source(spec))
    if root == HUB:
        config, hub_split = WIKITEXT_HUB[split]
        try:
            import datasets

            table = datasets.load_dataset("wikitext", config, split=hub_split)
        except Exception as exc:  # datasets raises many types for "unreachable / not cached"
            raise DataError(f"could not load WikiText-2 {split} through datasets.load_dataset('wikitext', "
                            f"{config!r}): {type(exc).__name__}: {exc}. {WIKITEXT_HOW_TO}") from exc
        return _corpus(f"wikitext-2-{split}", list(table["text"]), f"hub:wikitext/{config}/{hub_split}")
    spec = WIKITEXT_FILES[split]
    path = _mirror_file(root / spec.relpath, spec.sha256 if verify else None, f"WikiText-2 {split}", WIKITEXT_HOW_TO)
    return _corpus(f"wikitext-2-{split}", wikitext_rows(path), str(path))


def load_wikitext(split: str, data_dir: str | os.PathLike | None = None, *, verify: bool = True) -> TextCorpus:
    """Load one WikiText-2 split as a :class:`TextCorpus`.

    Args:
        split: ``"test"`` (raw text: what perplexity is evaluated on) or ``"valid"``
            (tokenized validation text: the only split calibration may use).
        data_dir: a mirror folder, ``"hub"`` (the Hugging Face Hub) or ``"embedded"``; defaults to
            ``$COMPRESSBENCH_DATA_DIR``, and without either the copy shipped in the package.
        verify: check a mirror file's sha256 against the published one (the shipped copy is always checked).
    """
    if split not in WIKITEXT_FILES:
        raise DataError(f"unknown WikiText-2 split {split!r}; valid splits: {', '.join(WIKITEXT_FILES)}")
    return _load_wikitext_cached(split, resolve_data_dir(data_dir), verify)
