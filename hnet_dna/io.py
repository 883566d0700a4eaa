"""Reading what users bring and writing the files other tools read.

Inputs (:func:`read_sequences`), by file name (``.gz`` allowed):

* FASTA (``.fa``, ``.fasta``, ``.fna``, ``.fas``; plain, gzip or BGZF): one sequence per record,
  id = the first word of the header;
* CSV / TSV (``.csv``, ``.tsv``, ``.txt``) or Parquet / Arrow (``.parquet``, ``.arrow``,
  ``.feather``): the fine-tuning readers (:mod:`hnet_dna.data.labelled`);
  a sequence column (found by name, else ``--sequence-column``), id = the id column (found by name,
  else ``--id-column``), else the 1-based row number;
* BED (``.bed``; 3 or more columns) with ``--fasta``: one sequence per interval, the reverse
  complement when column 6 (strand) is ``-``; id = ``chrom:start-end(strand)`` with 1-based,
  inclusive coordinates (``20:1001-1200(+)`` is the BED line ``20 1000 1200 . 0 +``).

Also: regions (``chr:start-end``), annotation files (BED, SAF, TSS lists), VCF/BCF variants
(pysam); and the writers: bigWig tracks, chunk BEDs, variant effects as TSV or an annotated VCF.
Every error names the file and the line or record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.genome import PROTEIN_ONLY, DataError, FastaSource, open_fasta
from .data.labelled import read_fasta_records, read_table
from .runs import atomic_path
from .tokenizer import NucleotideTokenizer, SequenceError

__all__ = ["InputSequence", "read_sequences", "read_bed_sequences", "read_text_lines", "encode_sequences",
           "parse_region", "resolve_region", "read_feature_edges", "Variant", "open_vcf", "load_variants",
           "write_bigwig", "write_chunks_bed", "write_variants_tsv", "write_variants_vcf"]

_TOKENIZER = NucleotideTokenizer()

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".fsa")


TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".arrow", ".feather")


@dataclass(frozen=True)
class InputSequence:
    id: str
    sequence: str
    where: str  # "FILE, line 3" / "FILE, record 'x'": for error messages


# ------------------------------------------------------------------------------------ inputs
def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz").removesuffix(".bgz")
    for suffixes, kind in ((FASTA_SUFFIXES, "fasta"), (TABLE_SUFFIXES, "table"), ((".bed",), "bed")):
        if name.endswith(suffixes):
            return kind
    raise DataError(
        f"{path}: cannot tell the format from the name; use a FASTA ({', '.join(FASTA_SUFFIXES)}), "
        f"a table ({', '.join(TABLE_SUFFIXES)}) or a BED (.bed, with --fasta), optionally .gz"
    )


def read_sequences(
    path,
    *,
    fasta=None,
    sequence_column: str | None = None,
    id_column: str | None = None,
    index_dir=None,
) -> list[InputSequence]:
    """Every sequence of ``path`` in file order (see the module docstring for the formats)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such input file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    kind = _kind(path)
    if kind == "fasta":
        return [InputSequence(r.id, r.sequence, r.where) for r in read_fasta_records(path)]
    if kind == "table":
        rows = read_table(path, sequence_column=sequence_column, id_column=id_column, label_required=False,
                          flag_prefix="--", id_default="row")
        return [InputSequence(r.id, r.sequence, r.where) for r in rows]
    if fasta is None:
        raise DataError(f"{path}: a BED input needs --fasta GENOME to read the sequences from")
    return read_bed_sequences(path, open_fasta(fasta, index_dir=index_dir))


def read_bed_sequences(path: Path, genome: FastaSource) -> list[InputSequence]:
    """Intervals of a BED (3+ columns; strand in column 6) as sequences of ``genome``."""
    out = []
    for lineno, line in read_text_lines(path):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        where = f"{path}, line {lineno}"
        fields = line.rstrip("\n").split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            raise DataError(f"{where}: a BED line needs chrom, start and end; got {len(fields)} field(s)")
        chrom, start, end = fields[0], fields[1], fields[2]
        try:
            start, end = int(start), int(end)
        except ValueError:
            raise DataError(f"{where}: start and end must be integers, got {fields[1]!r} and {fields[2]!r}") from None
        strand = fields[5] if len(fields) >= 6 else "+"
        if strand not in ("+", "-", "."):
            raise DataError(f"{where}: strand (column 6) must be +, - or ., got {strand!r}")
        record = genome.resolve(chrom)
        if record is None:
            raise DataError(
                f"{where}: chromosome {chrom!r} is not in {genome.path} (its records: {genome.describe_names()})"
            )
        if not 0 <= start < end:
            raise DataError(f"{where}: need 0 <= start < end, got {start}-{end}")
        if end > genome.records[record]:
            raise DataError(
                f"{where}: {chrom}:{start}-{end} runs past the end of {record} ({genome.records[record]:,} bp in {genome.path})"
            )
        seq = genome.fetch(record, start, end)
        if strand == "-":
            seq = _TOKENIZER.reverse_complement(seq)
        out.append(InputSequence(f"{chrom}:{start + 1}-{end}({'-' if strand == '-' else '+'})", seq, where))
    if not out:
        raise DataError(f"{path}: no intervals in the BED file")
    return out


def read_text_lines(path: Path):
    """(1-based line number, line) of a text file, plain or gzip (by its magic bytes); a file that
    is not readable text is a :class:`DataError` naming it."""
    import gzip

    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rt") if gz else open(path)) as f:
            lines = f.readlines()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable text file ({type(e).__name__}: {e})") from None
    return list(enumerate(lines, start=1))


def encode_sequences(records: list[InputSequence], tokenizer: NucleotideTokenizer) -> list[torch.Tensor]:
    """Ids of every record, checked before any output is made: a letter that is not DNA names the
    file and the line or record."""
    out = []
    for record in records:
        try:
            out.append(tokenizer.encode(record.sequence))
        except SequenceError as e:
            message = record.where + str(e).removeprefix("sequence")
            if any(c in PROTEIN_ONLY for c in set(record.sequence.upper())):
                message += ". This looks like a protein (amino-acid) sequence, not DNA: hnet_dna models DNA only"
            raise DataError(message) from None
    return out


def parse_region(text: str) -> tuple[str, int, int]:
    """``chr:start-end`` (1-based, inclusive, commas allowed) -> (chrom, start0, end0) half-open."""
    try:
        chrom, span = text.rsplit(":", 1)
        start, end = (int(x.replace(",", "")) for x in span.split("-"))
    except ValueError:
        raise DataError(f"--region {text!r}: expected CHROM:START-END (1-based, inclusive), e.g. 20:1,000,001-1,010,000") from None
    if start < 1 or end < start:
        raise DataError(f"--region {text!r}: need 1 <= START <= END")
    return chrom, start - 1, end


def resolve_region(genome: FastaSource, text: str, flag: str = "--region") -> tuple[str, str, int, int]:
    """``CHROM:START-END`` of ``genome`` -> (chrom as written, record name, start0, end0); a chromosome
    the FASTA lacks (after aliases) or an end past the chromosome is a :class:`DataError`."""
    chrom, start, end = parse_region(text)
    record = genome.resolve(chrom)
    if record is None:
        raise DataError(f"{flag} {text}: no chromosome {chrom!r} in {genome.path} ({genome.describe_names()})")
    if end > genome.records[record]:
        raise DataError(f"{flag} {text}: past the end of {record} ({genome.records[record]:,} bp in {genome.path})")
    return chrom, record, start, end


# ------------------------------------------------------------------------------- annotation
def read_feature_edges(path, record_names: set[str], start: int, end: int) -> tuple[np.ndarray, list]:
    """Sorted unique feature edges of ``path`` within [start, end) on a chromosome named by one of
    ``record_names``, and the features themselves (for plots) as (start, end) pairs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
    name = path.name.lower().removesuffix(".gz")
    edges, features = [], []
    kind = "saf" if name.endswith(".saf") else "bed" if name.endswith(".bed") else None
    for lineno, line in read_text_lines(path):
        fields = line.split()
        if not fields or fields[0].startswith(("#", "track", "browser")) or fields[0] == "GeneID":
            continue
        where = f"{path}, line {lineno}"
        if kind is None:
            kind = "tss" if len(fields) == 3 and fields[2] in ("+", "-", ".") else "bed"
        try:
            if kind == "saf":
                chrom, a, b = fields[1], int(fields[2]) - 1, int(fields[3])
            elif kind == "bed":
                chrom, a, b = fields[0], int(fields[1]), int(fields[2])
            else:
                chrom, a = fields[0], int(fields[1])
                b = a + 1
        except (ValueError, IndexError):
            raise DataError(f"{where}: not a {kind.upper()} line ({line.strip()[:60]!r})") from None
        if chrom not in record_names:
            continue
        features.append((a, b))
        for e in ((a,) if kind == "tss" else (a, b)):
            if start <= e < end:
                edges.append(e)
    return np.unique(np.asarray(edges, dtype=np.int64)), features


# ------------------------------------------------------------------------------------ variants
@dataclass
class Variant:
    chrom: str
    pos: int  # 1-based, as in the VCF
    id: str
    ref: str
    alts: tuple
    where: str


def open_vcf(path: Path):
    import pysam

    if not path.is_file():
        raise DataError(f"{path}: no such VCF/BCF file")
    try:
        vcf = pysam.VariantFile(str(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable VCF/BCF file ({e})") from None
    return vcf


def load_variants(path: Path) -> list[Variant]:
    vcf = open_vcf(path)
    out = []
    try:
        for n, rec in enumerate(vcf.fetch(), start=1):
            out.append(Variant(rec.chrom, rec.pos, rec.id or ".", rec.ref or "", tuple(rec.alts or ()),
                               f"{path}, variant {n} ({rec.chrom}:{rec.pos} {rec.ref}>{','.join(rec.alts or ())})"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read record {len(out) + 1} ({e})") from None
    finally:
        vcf.close()
    if not out:
        raise DataError(f"{path}: no variant records")
    return out


# ------------------------------------------------------------------------------------ writers
def write_bigwig(path: Path, chrom: str, chrom_length: int, positions: np.ndarray, values: np.ndarray) -> None:
    """One chromosome's per-base ``values`` at 0-based ``positions`` as a bigWig, written atomically."""
    import pyBigWig

    with atomic_path(path) as tmp:
        bw = pyBigWig.open(str(tmp), "w")
        bw.addHeader([(chrom, chrom_length)])
        contiguous = len(positions) > 0 and positions[-1] - positions[0] == len(positions) - 1
        step = 1 << 20  # entries per call: a chromosome's worth never sits in one Python list
        for k in range(0, len(positions), step):
            pos, val = positions[k:k + step], values[k:k + step].astype(np.float64)
            if contiguous:  # level 0: one value per base, as a fixed-step block
                bw.addEntries(chrom, int(pos[0]), values=val, span=1, step=1)
            else:
                bw.addEntries([chrom] * len(pos), pos, ends=pos + 1, values=val)
        bw.close()


def write_chunks_bed(path: Path, chrom: str, start: int, end: int, starts: np.ndarray) -> None:
    edges = np.unique(np.concatenate([[start], starts, [end]]))
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            f.write(f"{chrom}\t{a}\t{b}\tchunk{k}\n")


VARIANT_SCORES = {  # score kind: (TSV column, VCF INFO field, its description)
    "llr": ("llr_bits", "HNET_LLR", "hnet_dna: log2 P(alt window) - log2 P(ref window), bits (python -m hnet_dna.score)"),
    "masked_marginal": ("masked_marginal_bits", "HNET_MM",
                        "hnet_dna masked LM: log2 p(alt) - log2 p(ref) at the masked site(s), bits (python -m hnet_dna.score)"),
}


def write_variants_tsv(path: Path, variants, results, both_strands: bool, score: str = "llr") -> None:
    column = VARIANT_SCORES[score][0]
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(f"chrom\tpos\tid\tref\talt\t{column}" + (f"\t{column}_rc" if both_strands else "") + "\n")
        for v, row in zip(variants, results):
            for a, alt in enumerate(v.alts):
                value = row[a] if row is not None else None
                cells = [v.chrom, str(v.pos), v.id, v.ref, alt,
                         "NA" if value is None else f"{value[0]:.6f}"]
                if both_strands:
                    cells.append("NA" if value is None else f"{value[1]:.6f}")
                f.write("\t".join(cells) + "\n")


def write_variants_vcf(path: Path, source: Path, variants, results, both_strands: bool, score: str = "llr") -> None:
    import pysam

    _, field, description = VARIANT_SCORES[score]
    vcf = open_vcf(source)
    header = vcf.header.copy()
    header.info.add(field, "A", "Float", description)
    if both_strands:
        header.info.add(f"{field}_RC", "A", "Float", f"hnet_dna: {field} on the reverse-complement strand")
    name = path.name.lower()
    mode = "wb" if name.endswith(".bcf") else "wz" if name.endswith(".gz") else "w"
    with atomic_path(path) as tmp:
        with pysam.VariantFile(str(tmp), mode, header=header) as out:
            for rec, row in zip(vcf.fetch(), results):
                rec.translate(out.header)
                if row is not None and any(x is not None for x in row):
                    rec.info[field] = tuple(None if x is None else round(x[0], 6) for x in row)
                    if both_strands:
                        rec.info[f"{field}_RC"] = tuple(None if x is None else round(x[1], 6) for x in row)
                out.write(rec)
    vcf.close()

