"""Readers of labelled sequences and the labelled data module, on fixtures cut from the shared sets
(tests/data/make_fixtures.py)."""

import pytest
import torch

from hnet_dna.data import DataError, LabelledDataModule
from hnet_dna.data.labelled import (
    class_names,
    read_fasta_per_class,
    read_genomic_benchmarks,
    read_labelled,
    read_table,
)

from ..conftest import DATA

LABELLED = DATA / "labelled"


def test_every_shared_format_loads_without_flags():
    promoter = read_table(LABELLED / "promoter_tss_chr20_300bp.tsv")  # sequence label split site, TSV
    assert len(promoter) == 32 and {r.split for r in promoter} == {"train", "val", "test"}
    assert promoter[0].id == "2" and promoter[0].where.endswith("promoter_tss_chr20_300bp.tsv, line 2")
    enhancers = read_table(LABELLED / "human_enhancers_iEnhancer2L.csv")  # sequence,label CSV, no split
    assert len(enhancers) == 24 and {r.split for r in enhancers} == {None} and class_names(r.label for r in enhancers) == ["0", "1"]
    uci = read_table(LABELLED / "uci_splice_60bp.tsv")  # label id sequence: other column order, an id column
    assert uci[0].id == "HUMALPI1-DONOR-42" and class_names(r.label for r in uci) == ["EI", "IE", "N"]
    ecoli = read_table(LABELLED / "ecoli_promoters_v9d3.csv")  # seqs,labels,directions; lowercase
    assert len(ecoli) == 12 and ecoli[0].sequence[0].islower()


def test_csv_and_tsv_and_gzip_read_the_same(tmp_path):
    import gzip

    csv_rows = read_table(LABELLED / "human_enhancers_iEnhancer2L.csv")
    text = (LABELLED / "human_enhancers_iEnhancer2L.csv").read_text().replace(",", "\t")
    (tmp_path / "e.tsv").write_text(text)
    with gzip.open(tmp_path / "e.tsv.gz", "wt") as f:
        f.write(text)
    for path in (tmp_path / "e.tsv", tmp_path / "e.tsv.gz"):
        rows = read_table(path)
        assert [(r.sequence, r.label) for r in rows] == [(r.sequence, r.label) for r in csv_rows]


def test_columns_by_flag_and_numeric_labels(tmp_path):
    (tmp_path / "odd.csv").write_text("dna,target,fold\nACGT,1.0,train\nacgt,1,train\nGGCC,0,dev\nTTAA,0.0,TEST\n")
    with pytest.raises(DataError, match=r"odd.csv: no sequence column .*the columns are 'dna', 'target', 'fold'.*--data.sequence_column"):
        read_table(tmp_path / "odd.csv")
    rows = read_table(tmp_path / "odd.csv", sequence_column="dna", label_column="target", split_column="fold")
    assert [r.label for r in rows] == ["1", "1", "0", "0"]  # 1.0 and 1 are one class
    assert [r.split for r in rows] == ["train", "train", "val", "test"]
    assert class_names(["10", "9", "2"]) == ["2", "9", "10"]  # numeric order when every label is a number


def test_fasta_per_class_and_genomic_benchmarks_folders(tmp_path):
    rows = read_table(LABELLED / "human_enhancers_iEnhancer2L.csv")
    for label in ("0", "1"):
        with (tmp_path / f"class{label}.fa").open("w") as f:
            for i, r in enumerate(x for x in rows if x.label == label):
                f.write(f">seq{label}_{i} extra words\n{r.sequence[:100]}\n{r.sequence[100:]}\n")
    mapped = read_fasta_per_class({"enh": str(tmp_path / "class1.fa"), "other": str(tmp_path / "class0.fa")})
    assert len(mapped) == 24 and mapped[0].id == "seq1_0" and mapped[0].label == "enh"
    assert mapped[0].sequence == [r for r in rows if r.label == "1"][0].sequence
    root = tmp_path / "gb"
    for split, chunk in (("train", rows[:16]), ("test", rows[16:])):
        for i, r in enumerate(chunk):
            folder = root / split / ("positive" if r.label == "1" else "negative")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.txt").write_text(r.sequence + "\n")
    gb = read_genomic_benchmarks(root)
    assert len(gb) == 24 and {r.split for r in gb} == {"train", "test"} and {r.label for r in gb} == {"negative", "positive"}
    assert read_labelled(str(root))[0].id == gb[0].id


def test_data_module_splits_case_iupac_and_padding(tmp_path):
    dm = LabelledDataModule(str(LABELLED / "promoter_tss_chr20_300bp.tsv"), batch_size=5)
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [16, 8, 8]  # the split column
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape == (5, 300) and batch["mask"].all() and batch["labels"].dtype == torch.long
    uci = LabelledDataModule(str(LABELLED / "uci_splice_60bp.tsv"), val_fraction=0.25, test_fraction=0.25, seed=3)
    assert uci.class_names == ["EI", "IE", "N"]
    labels = {s: sorted(uci.datasets[s].labels) for s in ("train", "val", "test")}
    assert labels["test"] == [0, 0, 1, 1, 2, 2]  # stratified: 8 per class, a quarter held out
    assert sorted(labels["val"].count(c) for c in range(3)) == [1, 2, 2]  # a quarter of 18, stratified
    again = LabelledDataModule(str(LABELLED / "uci_splice_60bp.tsv"), val_fraction=0.25, test_fraction=0.25, seed=3)
    assert [r.id for r in again.datasets["test"].records] == [r.id for r in uci.datasets["test"].records]  # seeded
    ids = torch.cat([uci.datasets[s].ids[i] for s in ("train", "val", "test") for i in range(len(uci.datasets[s]))])
    assert (ids <= 4).all() and (ids == 4).any()  # IUPAC letters read as N under the lenient policy
    with pytest.raises(DataError, match=r"uci_splice_60bp.tsv, line \d+, position \d+: IUPAC ambiguity letter"):
        LabelledDataModule(str(LABELLED / "uci_splice_60bp.tsv"), iupac_policy="strict")
    ecoli = LabelledDataModule(str(LABELLED / "ecoli_promoters_v9d3.csv"), val_fraction=0.5)
    assert (ecoli.datasets["train"].ids[0] < 4).all()  # lowercase read as bases, not unknown tokens
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("sequence\tlabel\nACGTACGTAC\t1\nACG\t0\nACGTAC\t1\nTTTTT\t0\n")
    short = LabelledDataModule(str(mixed), val_fraction=0.5, batch_size=4)
    batch = next(iter(short.train_dataloader()))
    assert batch["mask"].sum(-1).tolist() == [len(short.datasets["train"].ids[i]) for i in batch["index"].tolist()]
    assert (batch["input_ids"][~batch["mask"]] == 5).all()  # right-padded with pad_id


def test_reverse_complement_augmentation_is_keyed_by_epoch_and_row():
    dm = LabelledDataModule(str(LABELLED / "human_enhancers_iEnhancer2L.csv"), strand_symmetric=True, reverse_complement=0.5,
                            sample_seed=1)
    ds = dm.datasets["train"]
    flips = [[not torch.equal(ds[(epoch, i)]["input_ids"], ds.ids[i]) for i in range(len(ds))] for epoch in (0, 1)]
    assert 0 < sum(flips[0]) < len(ds) and flips[0] != flips[1]
    assert flips[0] == [not torch.equal(ds[(0, i)]["input_ids"], ds.ids[i]) for i in range(len(ds))]  # same key, same draw
    assert all(torch.equal(dm.datasets["val"][(0, i)]["input_ids"], dm.datasets["val"].ids[i]) for i in range(len(dm.datasets["val"])))


def _train_pass(dm):
    """(rows in batch order, which rows were reverse-complemented) of the first training epoch."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    rows, flipped = [], []
    ds = dm.datasets["train"]
    for batch in loader:
        for row, ids, mask in zip(batch["index"].tolist(), batch["input_ids"], batch["mask"]):
            rows.append(row)
            flipped.append(not torch.equal(ids[mask], ds.ids[row]))
    return rows, flipped


def test_a_model_seed_varies_batch_order_and_augmentation_but_not_the_split(monkeypatch):
    """Issue #17: seeds must change batch order and reverse-complement draws; the split must not move."""
    path = str(LABELLED / "human_enhancers_iEnhancer2L.csv")
    kwargs = dict(strand_symmetric=True, seed=3, val_fraction=0.25, batch_size=4)
    a, b = (LabelledDataModule(path, sample_seed=s, **kwargs) for s in (0, 1))
    for split in ("train", "val"):
        assert [r.where for r in a.records[split]] == [r.where for r in b.records[split]]
    order_a, flips_a = _train_pass(a)
    order_b, flips_b = _train_pass(b)
    assert sorted(order_a) == sorted(order_b) and order_a != order_b
    assert [flips_a[order_a.index(i)] for i in range(len(order_a))] != [flips_b[order_b.index(i)] for i in range(len(order_b))]
    assert _train_pass(LabelledDataModule(path, sample_seed=0, **kwargs)) == (order_a, flips_a)  # a seed repeats itself
    # without sample_seed, the run's seed_everything decides (Lightning exports it as PL_GLOBAL_SEED)
    monkeypatch.setenv("PL_GLOBAL_SEED", "1")
    assert _train_pass(LabelledDataModule(path, **kwargs)) == (order_b, flips_b)


def test_strand_specific_labels_are_never_reverse_complemented():
    path = str(LABELLED / "uci_splice_60bp.tsv")
    with pytest.raises(DataError, match="reverse-complement augmentation keeps each label.*--data.strand_symmetric true"):
        LabelledDataModule(path, reverse_complement=0.5)
    specific = LabelledDataModule(path)
    assert not specific.strand_symmetric and specific.datasets["train"].reverse_complement == 0
    symmetric = LabelledDataModule(path, strand_symmetric=True)
    assert symmetric.datasets["train"].reverse_complement == 0.5 and symmetric.datasets["val"].reverse_complement == 0


def test_folds_partition_every_row_into_stratified_test_sets():
    path = str(LABELLED / "uci_splice_60bp.tsv")
    everything = sorted(r.where for r in read_table(LABELLED / "uci_splice_60bp.tsv"))
    tests = []
    for fold in range(3):
        dm = LabelledDataModule(path, folds=3, fold=fold, val_fraction=0.2, test_fraction=0.5, seed=4)
        held = [r.where for r in dm.records["test"]]
        assert sorted(held + [r.where for s in ("train", "val") for r in dm.records[s]]) == everything
        assert len(set(r.label for r in dm.records["test"])) == 3  # every class in every fold
        tests += held
    assert sorted(tests) == everything  # the folds' test rows are disjoint and cover every row
    again = LabelledDataModule(path, folds=3, fold=1, val_fraction=0.2, seed=4)
    other = LabelledDataModule(path, folds=3, fold=1, val_fraction=0.2, seed=5)
    assert [r.where for r in again.records["test"]] != [r.where for r in other.records["test"]]  # seeded
    with pytest.raises(DataError, match="comes with test rows: cross-validation"):
        LabelledDataModule(str(LABELLED / "promoter_tss_chr20_300bp.tsv"), folds=3)
    with pytest.raises(DataError, match="--data.folds must be 0"):
        LabelledDataModule(path, folds=3, fold=3)


BAD_TABLES = [
        (None, {}, r"missing.tsv: no such file"),
        ("dna\ttarget\nACGT\t1\n", {}, r"no sequence column \(looked for sequence, seq, seqs\); the columns are 'dna', 'target'"),
        ("sequence\ttarget\nACGT\t1\n", {}, r"no label column .*the columns are 'sequence', 'target'"),
        ("sequence\tlabel\nACGT\t1\nGGCC\t1\nTTAA\t1\n", {}, r"the training labels hold one class \('1'\)"),
        ("sequence\tlabel\nACGT\t1\n\t0\n", {}, r"bad.tsv, line 3: the sequence is empty"),
        ("sequence\tlabel\nACGT\t1\nGGCC\t0\nMKLVQF\t0\n", {}, r"bad.tsv, line 4, position 3: character 'L' is not a DNA letter"),
        ("sequence\tlabel\tsplit\nACGT\t1\ttrain\nGGCC\t0\ttrain\nAAAA\t2\ttest\n", {}, r"bad.tsv, line 4: label '2' never occurs in the training data"),
        ("sequence\tlabel\tsplit\nACGT\t1\ttrain\nGGCC\t0\tholdout\n", {}, r"bad.tsv, line 3: unknown split 'holdout'"),
]


@pytest.mark.parametrize("content, kwargs, message", BAD_TABLES)
def test_bad_labelled_input_names_the_file_and_line(tmp_path, content, kwargs, message):
    path = tmp_path / ("missing.tsv" if content is None else "bad.tsv")
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        LabelledDataModule(str(path), val_fraction=0.0, **kwargs)


# ------------------------------------------------------------- Parquet, Arrow, Hugging Face folders
HF = LABELLED / "hf"


def _fields(rows):
    return [(r.sequence, r.label, r.split) for r in rows]


def test_parquet_and_arrow_read_as_the_csv_reader_does(tmp_path):
    import pyarrow as pa
    import pyarrow.feather

    tsv = read_table(LABELLED / "promoter_tss_chr20_300bp.tsv")
    parquet = read_table(HF / "promoter_tss_chr20_300bp.parquet")  # integer labels, same columns
    assert _fields(parquet) == _fields(tsv) and len({r.split for r in parquet}) == 3
    assert parquet[0].id == "1" and parquet[4].where.endswith("promoter_tss_chr20_300bp.parquet, row 5")
    table = pa.table({"seq": [r.sequence for r in tsv], "y": [float(r.label) for r in tsv],  # 1.0 is class "1"
                      "set": [{"val": "validation"}.get(r.split, r.split) for r in tsv], "name": [f"s{i}" for i in range(len(tsv))]})
    pyarrow.feather.write_feather(table, tmp_path / "p.arrow")  # Arrow IPC file format
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)  # Arrow IPC stream format, as datasets' shards are
    for name in ("p.arrow", "stream.arrow"):
        rows = read_table(tmp_path / name)
        assert _fields(rows) == _fields(tsv) and rows[3].id == "s3"
    # the data module builds the same tensors from the Parquet file as from the TSV
    a, b = (LabelledDataModule(str(path)) for path in (LABELLED / "promoter_tss_chr20_300bp.tsv", HF / "promoter_tss_chr20_300bp.parquet"))
    for split in ("train", "val", "test"):
        assert all(torch.equal(x, y) for x, y in zip(a.datasets[split].ids, b.datasets[split].ids))
        assert a.datasets[split].labels == b.datasets[split].labels


def test_hugging_face_folders_give_their_splits():
    tsv = read_table(LABELLED / "promoter_tss_chr20_300bp.tsv")
    nt = read_labelled(str(HF / "promoter_tss_nt_layout"))  # DatasetDict.save_to_disk: train/validation/test
    assert sorted(_fields(nt)) == sorted(_fields(tsv))
    by_site = read_table(LABELLED / "promoter_tss_chr20_300bp.tsv", id_column="site")
    assert sorted((r.id, *_fields([r])[0]) for r in nt) == sorted((r.id, *_fields([r])[0]) for r in by_site)  # name -> id
    assert nt[0].where.endswith("promoter_tss_nt_layout/train, row 1")
    dm = LabelledDataModule(str(HF / "promoter_tss_nt_layout"))
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [16, 8, 8]
    hub = read_labelled(str(HF / "enhancers_hub_layout"))  # data/{train,test}-00000-of-00001.parquet, columns seq, label
    csv_rows = read_table(LABELLED / "human_enhancers_iEnhancer2L.csv")
    assert sorted((r.sequence, r.label) for r in hub) == sorted((r.sequence, r.label) for r in csv_rows)
    assert {r.sequence for r in hub if r.split == "train"} == {r.sequence for r in csv_rows[:16]}
    assert {r.split for r in hub} == {"train", "test"}
    from hnet_dna.io import read_sequences

    embed_input = read_sequences(HF / "promoter_tss_chr20_300bp.parquet")  # embed / score / ism take Parquet too
    assert [r.sequence for r in embed_input] == [r.sequence for r in tsv] and embed_input[0].id == "1"


def _as_parquet(text: str, path):
    """A TSV's text as a Parquet file with the same columns (text cells) and rows."""
    import csv
    import io

    import pyarrow as pa
    import pyarrow.parquet

    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    header, body = rows[0], rows[1:]
    pyarrow.parquet.write_table(pa.table({c: [r[i] for r in body] for i, c in enumerate(header)}), path)


@pytest.mark.parametrize("content, kwargs, message", BAD_TABLES)
def test_bad_parquet_gets_the_errors_csv_gets(tmp_path, content, kwargs, message):
    """Each bad TSV above, written as Parquet: the same message, with the data row for the line."""
    path = tmp_path / ("missing.parquet" if content is None else "bad.parquet")
    if content is not None:
        _as_parquet(content, path)
    import re

    message = re.sub(r"line (\d+)", lambda m: f"row {int(m.group(1)) - 1}", message.replace(".tsv", ".parquet"))
    with pytest.raises(DataError, match=message):
        LabelledDataModule(str(path), val_fraction=0.0, **kwargs)


def test_bad_arrow_data_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet

    (tmp_path / "junk.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match=r"junk.parquet: not readable Parquet file"):
        read_table(tmp_path / "junk.parquet")
    pyarrow.parquet.write_table(pa.table({"sequence": ["ACGT", None], "label": [1, 0]}), tmp_path / "null.parquet")
    with pytest.raises(DataError, match=r"null.parquet, row 2: the sequence is empty"):
        read_table(tmp_path / "null.parquet")
    pyarrow.parquet.write_table(pa.table({"sequence": [[0, 1, 2]], "label": [1]}), tmp_path / "ids.parquet")
    with pytest.raises(DataError, match=r"ids.parquet, row 1: the sequence column 'sequence' holds list values, not text"):
        read_table(tmp_path / "ids.parquet")
    odd = tmp_path / "odd_split"
    odd.mkdir()
    pyarrow.parquet.write_table(pa.table({"sequence": ["ACGT"], "label": [1]}), odd / "holdout-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"holdout-00000-of-00001.parquet: split 'holdout' is not train, validation"):
        read_labelled(str(odd))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"empty_dir: a folder hnet_dna does not recognise; .*save_to_disk"):
        read_labelled(str(tmp_path / "empty_dir"))


def test_row_ids_are_unique_over_a_data_sets_parts():
    hub = read_labelled(str(HF / "enhancers_hub_layout"))  # two Parquet files, no id column
    assert len({r.id for r in hub}) == len(hub) == 24


# ------------------------------------------------------------------- multilabel and regression (#33)
def _promoter_rows(n=40):
    """Real sequences of the promoter fixture: (sequence, label, split)."""
    lines = (LABELLED / "promoter_tss_chr20_300bp.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    cells = [line.split("\t") for line in lines[1 : n + 1]]
    return [(c[header.index("sequence")], c[header.index("label")], c[header.index("split")]) for c in cells]


def test_the_task_is_read_from_the_columns_or_asked_for(tmp_path):
    rows = _promoter_rows()
    columns = tmp_path / "columns.tsv"
    columns.write_text("sequence\tlabel_promoter\tlabel_gc_rich\n" + "".join(
        f"{s}\t{y}\t{int(s.count('G') + s.count('C') > 150)}\n" for s, y, _ in rows))
    names = tmp_path / "names.tsv"
    names.write_text("sequence\tlabel\n" + "".join(
        f"{s}\t{';'.join(n for n, on in (('promoter', y == '1'), ('gc_rich', s.count('G') + s.count('C') > 150)) if on)}\n"
        for s, y, _ in rows))
    by_columns = LabelledDataModule(str(columns), val_fraction=0.25)
    by_names = LabelledDataModule(str(names), val_fraction=0.25, task="multilabel")
    assert by_columns.task == by_names.task == "multilabel"
    assert by_columns.class_names == ["promoter", "gc_rich"] and by_names.class_names == ["gc_rich", "promoter"]
    for split in ("train", "val"):  # the same rows, the same multi-hot labels (columns in each one's order)
        a = torch.tensor(by_columns.datasets[split].labels)
        b = torch.tensor(by_names.datasets[split].labels)[:, [1, 0]]
        assert torch.equal(a, b) and a.shape[1] == 2
    with pytest.raises(DataError, match="the label is empty"):  # a plain label column is a class, as before
        LabelledDataModule(str(names), val_fraction=0.25)

    targets = tmp_path / "targets.csv"
    targets.write_text("seq,target_gc,target_cpg,split\n" + "".join(
        f"{s},{(s.count('G') + s.count('C')) / len(s):.4f},{s.count('CG')},{'train' if sp == 'train' else 'test'}\n"
        for s, _, sp in rows))
    dm = LabelledDataModule(str(targets), val_fraction=0.2)
    assert dm.task == "regression" and dm.class_names == ["gc", "cpg"]
    y = torch.tensor(dm.datasets["train"].labels)
    assert y.dtype == torch.float32 and y.shape[1] == 2 and y[:, 1].max() > 5
    mean, std = dm.target_stats()
    assert mean == pytest.approx(y.double().mean(0).tolist()) and std == pytest.approx(y.double().std(0, unbiased=False).tolist())
    plain = tmp_path / "plain.csv"
    plain.write_text("sequence,y\n" + "".join(f"{s},{s.count('CG')}\n" for s, _, _ in rows))
    assert LabelledDataModule(str(plain), val_fraction=0.2, task="regression").class_names == ["y"]
    with pytest.raises(DataError, match="never occurs in the training data"):  # "y" is a class column unless asked
        LabelledDataModule(str(plain), val_fraction=0.2)


BAD_TASK_TABLES = [
    ("sequence\ttarget_a\nACGT\t1.5\nGGCC\tn/a\n", {}, r"bad.tsv, line 3: the target column 'target_a' holds 'n/a', not a finite number"),
    ("sequence\ttarget_a\nACGT\t1.5\nGGCC\tNaN\n", {}, r"bad.tsv, line 3: the target column 'target_a' holds 'NaN', not a finite number"),
    ("sequence\ttarget_a\nACGT\t1.5\nGGCC\t\n", {}, r"bad.tsv, line 3: the target column 'target_a' holds '', not a finite number"),
    ("sequence\ttarget\nACGT\t1.5\nGGCC\t2\n", {}, r"no label column .*give --data.task regression"),
    ("sequence\tscore\nACGT\t1.5\nGGCC\t2\n", {"task": "regression", "target_columns": ["signal"]}, r"bad.tsv: no column 'signal' \(--data.target_columns\)"),
    ("sequence\tlabel_a\tlabel_b\nACGT\t1\t0\nGGCC\t0\t1\n", {"label_columns": ["label_a", "label_c"]}, r"bad.tsv: no column 'label_c' \(--data.label_columns\)"),
    ("sequence\tlabel_a\tlabel_b\nACGT\t1\t0\nGGCC\t2\t1\n", {}, r"bad.tsv, line 3: the label column 'label_a' holds '2'; a multilabel column holds 0 or 1"),
    ("sequence\tlabel_a\tlabel_b\nACGT\t1\t0\nGGCC\t0\t0\n", {}, r"label 'b' is never set in the training rows"),
    ("sequence\ttarget_a\nACGT\t1\nGGCC\t1\n", {}, r"target 'a' is constant in the training rows"),
    ("sequence\tlabel\tsplit\nACGT\ta\ttrain\nGGCC\tb\ttrain\nTTTT\ta;c\ttest\n", {"task": "multilabel"}, r"bad.tsv, line 4: label 'c' never occurs in the training data"),
    ("sequence\tlabel\nACGT\t1\nGGCC\t0\n", {"task": "ranking"}, r"--data.task must be one of multiclass, multilabel, regression"),
]


@pytest.mark.parametrize("content, kwargs, message", BAD_TASK_TABLES)
def test_bad_multilabel_and_regression_input_names_the_file_line_and_column(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        LabelledDataModule(str(path), val_fraction=0.0, **kwargs)


def test_a_fasta_per_class_input_is_not_a_regression(tmp_path):
    fasta = tmp_path / "a.fa"
    fasta.write_text(">x\nACGT\n")
    with pytest.raises(DataError, match="--data.task regression, but this input is read as multiclass"):
        LabelledDataModule({"a": str(fasta), "b": str(fasta)}, task="regression", val_fraction=0.0)
