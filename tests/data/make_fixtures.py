"""Cut the small real-DNA fixtures the unit tests use from ../shared/data (run from the repo root).

    python tests/data/make_fixtures.py [--shared ../shared/data]

Writes, next to this script:
  chr20_slices.fa  two slices of human chr20 (GRCh37, BGZF source):
                   chr20_train    20:10,000,001-10,300,000  (300 kb, training)
                   chr20_heldout  20:40,000,001-40,060,000  ( 60 kb, held out)
                   Both lie far from the centromere and hold no N.
  hg38_chrM.fa     the human mitochondrial genome (rCRS), copied whole: 16,569 bp with UCSC
                   soft-masking (lowercase repeats), for case-policy tests.
  official_state_dict_shapes.json
                   keys and shapes of the official hnet_1stage_L / hnet_2stage_L state dicts
                   (copied from ../shared).
And, inside the package (the demo recipe's genome, with its index):
  hnet_dna/resources/demo_chr20.fa(.fai)
                   record chr20_demo = 20:10,000,001-11,000,000 of GRCh37 (1 Mb, no N).

The source files are only read: their existing .fai/.gzi indexes are used as they are.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pyfaidx import Fasta

HERE = Path(__file__).resolve().parent
SLICES = [
    ("chr20_train", "20", 10_000_001, 10_300_000),
    ("chr20_heldout", "20", 40_000_001, 40_060_000),
]


def write_fasta(path: Path, records: list[tuple[str, str]], width: int = 80) -> None:
    with path.open("w") as f:
        for name, seq in records:
            f.write(f">{name}\n")
            for i in range(0, len(seq), width):
                f.write(seq[i : i + width] + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared" / "data")
    args = parser.parse_args()

    genome = Fasta(str(args.shared / "genomes" / "GRCh37_chr20.fa.gz"), read_ahead=0, rebuild=False)
    records = []
    for name, chrom, start, end in SLICES:
        seq = str(genome[chrom][start - 1 : end]).upper()
        if "N" in seq:
            raise SystemExit(f"{name}: {chrom}:{start}-{end} holds N; choose another slice")
        records.append((f"{name} {chrom}:{start}-{end} GRCh37", seq))
    write_fasta(HERE / "chr20_slices.fa", records)
    shutil.copyfile(args.shared / "genomes" / "hg38_chrM.fa", HERE / "hg38_chrM.fa")
    demo = HERE.parents[1] / "hnet_dna" / "resources" / "demo_chr20.fa"
    seq = str(genome["20"][10_000_000:11_000_000])
    write_fasta(demo, [("chr20_demo 20:10,000,001-11,000,000 GRCh37 (hnet_dna demo genome)", seq)])
    Fasta(str(demo), rebuild=True).close()  # writes demo_chr20.fa.fai
    manifest = "official_state_dict_shapes.json"
    shutil.copyfile(args.shared.parent / manifest, HERE / manifest)
    print("wrote chr20_slices.fa, hg38_chrM.fa and", manifest, "in", HERE)


if __name__ == "__main__":
    main()
