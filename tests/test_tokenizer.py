import pytest
import torch

from hnet_dna import NucleotideTokenizer, SequenceError
from hnet_dna.tokenizer import NUCLEOTIDE_VOCAB

from .conftest import DATA, read_fixture_fasta


def test_id_table_is_fixed():
    # Checkpoints and id-level reverse complement depend on this exact table; <mask> (masked LMs) came last.
    assert NUCLEOTIDE_VOCAB == ("A", "C", "G", "T", "N", "<pad>", "<bos>", "<eos>", "<mask>")
    tok = NucleotideTokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.n_id, tok.mask_id) == (9, 5, 6, 7, 4, 8)
    assert tok.reverse_complement(torch.tensor([0, 1, 8, 4])).tolist() == [4, 8, 2, 3]  # <mask> is its own complement
    assert tok.encode("ACGTN").tolist() == [0, 1, 2, 3, 4]


def test_lowercase_is_uppercased_and_reported_as_soft_mask():
    tok = NucleotideTokenizer()
    ids, soft = tok.encode("ACgtN", return_soft_mask=True)
    assert ids.tolist() == [0, 1, 2, 3, 4]
    assert soft.tolist() == [False, False, True, True, False]


def test_soft_mask_on_real_soft_masked_genome():
    seq = read_fixture_fasta(DATA / "hg38_chrM.fa")["chrM"]
    ids, soft = NucleotideTokenizer().encode(seq, return_soft_mask=True, record="chrM")
    assert len(ids) == 16569
    assert soft.sum().item() == sum(c.islower() for c in seq) > 0
    assert NucleotideTokenizer().decode(ids) == seq.upper()


def test_iupac_letters_become_n_by_default_and_fail_under_strict():
    assert NucleotideTokenizer().encode("ARYSWKMBDHVa").tolist() == [0] + [4] * 10 + [0]
    with pytest.raises(SequenceError, match=r"record 'seq1', position 3: IUPAC ambiguity letter 'R'.*strict"):
        NucleotideTokenizer(policy="strict").encode("ACRT", record="seq1")
    # N itself is a base letter, allowed under strict
    assert NucleotideTokenizer(policy="strict").encode("ACNT").tolist() == [0, 1, 4, 3]


@pytest.mark.parametrize("bad, pos, char", [("ACGX", 4, "X"), ("AC-G", 3, "-"), ("A CG", 2, " "), ("ACU", 3, "U"), ("ACé", 3, "é")])
def test_other_characters_are_errors_naming_record_and_position(bad, pos, char):
    with pytest.raises(SequenceError) as err:
        NucleotideTokenizer().encode(bad, record="chr7")
    msg = str(err.value)
    assert "record 'chr7'" in msg and f"position {pos}" in msg and repr(char) in msg


def test_empty_sequence_is_an_error():
    with pytest.raises(SequenceError, match="empty"):
        NucleotideTokenizer().encode("")
    with pytest.raises(SequenceError, match="no sequences"):
        NucleotideTokenizer().batch_encode([])


def test_batch_encode_right_pads_with_mask_and_names_bad_rows():
    tok = NucleotideTokenizer()
    b = tok.batch_encode(["ACGT", "Ga", "T"], return_soft_mask=True)
    assert b["input_ids"].tolist() == [[0, 1, 2, 3], [2, 0, 5, 5], [3, 5, 5, 5]]
    assert b["mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert b["soft_mask"].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(SequenceError, match="record '#1', position 2"):
        tok.batch_encode(["ACGT", "AZ"])
    with pytest.raises(SequenceError, match="record 'b'"):
        tok.batch_encode(["ACGT", "AZ"], records=["a", "b"])


def test_special_tokens_and_decode():
    tok = NucleotideTokenizer()
    ids = tok.encode("ACG", add_bos=True, add_eos=True)
    assert ids.tolist() == [6, 0, 1, 2, 7]
    assert tok.decode(ids) == "ACG"
    assert tok.decode(ids, skip_special=False) == "<bos>ACG<eos>"
    batch = tok.batch_encode(["ACGT", "TT"])
    assert tok.decode(batch["input_ids"]) == ["ACGT", "TT"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode(torch.tensor([0, 9]))


def test_reverse_complement_of_strings_keeps_case_and_iupac():
    tok = NucleotideTokenizer()
    assert tok.reverse_complement("AACGTN") == "NACGTT"
    assert tok.reverse_complement("acgR") == "Ycgt"
    seq = "ACGTRYKMBDHVNacgt"
    assert tok.reverse_complement(tok.reverse_complement(seq)) == seq


def test_reverse_complement_of_ids_matches_strings_and_keeps_padding():
    tok = NucleotideTokenizer()
    seqs = ["AACGTN", "GGA", "T"]
    batch = tok.batch_encode(seqs)
    rc = tok.reverse_complement(batch["input_ids"], mask=batch["mask"])
    assert tok.decode(rc) == [tok.reverse_complement(s) for s in seqs]
    assert (rc[~batch["mask"]] == tok.pad_id).all()
    assert tok.reverse_complement(tok.encode("AACG")).tolist() == tok.encode("CGTT").tolist()
    back = tok.reverse_complement(rc, mask=batch["mask"])
    assert torch.equal(back, batch["input_ids"])


def test_byte_mode_follows_official_byte_ids():
    tok = NucleotideTokenizer(mode="byte")
    assert tok.vocab_size == 256 and tok.bos_id == 254 and tok.eos_id == 255
    assert tok.encode("ACgtR", add_bos=True).tolist() == [254, 65, 67, 71, 84, 78]
    assert tok.reverse_complement(tok.encode("AACG")).tolist() == tok.encode("CGTT").tolist()
    assert tok.decode(tok.encode("ACGTN")) == "ACGTN"
    with pytest.raises(SequenceError, match="position 2"):
        tok.encode("A*")


def test_settings_roundtrip_and_bad_settings():
    tok = NucleotideTokenizer(mode="byte", policy="strict")
    again = NucleotideTokenizer.from_settings(tok.settings)
    assert (again.mode, again.policy) == ("byte", "strict")
    with pytest.raises(ValueError, match="mode"):
        NucleotideTokenizer(mode="kmer")
    with pytest.raises(ValueError, match="policy"):
        NucleotideTokenizer(policy="drop")


def test_nucleotide_ids_become_the_byte_modes_ascii_codes():
    nucleotide, byte = NucleotideTokenizer(), NucleotideTokenizer(mode="byte")
    ids = nucleotide.encode("ACGTNacgtn", add_bos=True, add_eos=True)
    assert torch.equal(byte.from_nucleotide_ids(ids), byte.encode("ACGTNacgtn", add_bos=True, add_eos=True))
    assert byte.from_nucleotide_ids(torch.tensor([nucleotide.pad_id])).item() == byte.pad_id == 0
    assert nucleotide.from_nucleotide_ids(ids) is ids  # the nucleotide mode: nothing to do
