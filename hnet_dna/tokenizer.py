"""Nucleotide and byte tokenizers with explicit, documented data policies.

Id table of the nucleotide mode (fixed: checkpoints and reverse complement on ids depend on it)::

    id  token  meaning
    0   A
    1   C
    2   G
    3   T
    4   N      unknown base; also where IUPAC ambiguity letters go under the default policy
    5   <pad>  right padding of batches; never a target
    6   <bos>  optional start-of-sequence marker
    7   <eos>  optional end-of-sequence marker
    8   <mask> a hidden base, for masked-LM models (HNetForMaskedLM; vocab_size 9). Causal
               models keep vocab_size 8: the first eight ids never moved.

A C G T are 0..3 so that the complement of a base id ``i`` is ``3 - i``.

The byte mode follows the official H-Net byte-level models: vocabulary 256, a letter's id is its
ASCII code, BOS = 254, EOS = 255, <mask> = 253; pad is 0 (NUL never occurs in DNA text).

Policies that change data, applied in both modes, in this order:

* case: lowercase letters (soft-masked repeats in UCSC / Ensembl FASTA) are upper-cased; ask for
  ``return_soft_mask=True`` to keep where they were.
* IUPAC ambiguity letters R Y S W K M B D H V (either case): ``policy="lenient"`` (default) turns
  them into N; ``policy="strict"`` raises :class:`SequenceError`.
* anything else (digits, gaps ``-``, ``.``, whitespace, U, ...) always raises
  :class:`SequenceError` naming the record and the 1-based position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

__all__ = ["NucleotideTokenizer", "SequenceError", "NUCLEOTIDE_VOCAB", "SEQUENCE_VOCAB_SIZE"]

NUCLEOTIDE_VOCAB = ("A", "C", "G", "T", "N", "<pad>", "<bos>", "<eos>", "<mask>")
SEQUENCE_VOCAB_SIZE = 8  # ids a sequence can hold (all but <mask>): causal models' vocab_size
IUPAC_AMBIGUOUS = "RYSWKMBDHV"
POLICIES = ("lenient", "strict")
MODES = ("nucleotide", "byte")


class SequenceError(ValueError):
    """A sequence holds something that is not DNA (or an ambiguity letter under the strict policy)."""


def _build_lookup(mode: str, policy: str) -> np.ndarray:
    """Byte -> id table; -1 marks a letter that is an error, -2 an IUPAC letter under strict."""
    table = np.full(256, -1, dtype=np.int16)
    for case in (str.upper, str.lower):
        for i, base in enumerate("ACGTN"):
            code = ord(case(base))
            table[code] = i if mode == "nucleotide" else ord(base)
        for letter in IUPAC_AMBIGUOUS:
            code = ord(case(letter))
            if policy == "strict":
                table[code] = -2
            else:
                table[code] = 4 if mode == "nucleotide" else ord("N")
    return table


@dataclass(frozen=True)
class TokenizerSettings:
    """What a checkpoint stores to rebuild its tokenizer."""

    mode: str = "nucleotide"
    policy: str = "lenient"


class NucleotideTokenizer:
    """DNA string <-> id tensor, with padding, soft-mask tracking and reverse complement.

    Args:
        mode: ``"nucleotide"`` (the table above: 8 ids a sequence holds, and ``<mask>``) or ``"byte"``
            (vocabulary 256, ASCII).
        policy: ``"lenient"`` turns IUPAC ambiguity letters into N; ``"strict"`` rejects them.

    Example::

        tok = NucleotideTokenizer()
        ids = tok.encode("ACGTn")                      # tensor([0, 1, 2, 3, 4])
        batch = tok.batch_encode(["ACGT", "AC"])       # right-padded ids + bool mask
        tok.reverse_complement("AACG")                 # 'CGTT'
    """

    def __init__(self, mode: str = "nucleotide", policy: str = "lenient"):
        if mode not in MODES:
            raise ValueError(f"tokenizer mode must be one of {MODES}, got {mode!r}")
        if policy not in POLICIES:
            raise ValueError(f"tokenizer policy must be one of {POLICIES}, got {policy!r}")
        self.mode = mode
        self.policy = policy
        self._lookup = _build_lookup(mode, policy)
        if mode == "nucleotide":
            self.vocab_size = len(NUCLEOTIDE_VOCAB)
            self.pad_id, self.bos_id, self.eos_id, self.mask_id = 5, 6, 7, 8
            self.base_ids = (0, 1, 2, 3)
            self.n_id = 4
        else:
            self.vocab_size = 256
            self.pad_id, self.bos_id, self.eos_id, self.mask_id = 0, 254, 255, 253
            self.base_ids = tuple(ord(b) for b in "ACGT")
            self.n_id = ord("N")
        # Complement of every id; ids without a complement (N, specials) map to themselves.
        comp = torch.arange(self.vocab_size)
        for a, b in (("A", "T"), ("C", "G")):
            ia, ib = self.token_to_id(a), self.token_to_id(b)
            comp[ia], comp[ib] = ib, ia
        self._complement_ids = comp
        # The id of every nucleotide-table id (0..8) in this mode: the data modules and the
        # benchmark's held-out windows are stored in the nucleotide table.
        self._from_nucleotide = torch.tensor([self.token_to_id(t) for t in NUCLEOTIDE_VOCAB])

    # ----------------------------------------------------------------------------- settings
    @property
    def settings(self) -> dict:
        return asdict(TokenizerSettings(self.mode, self.policy))

    @classmethod
    def from_settings(cls, settings: dict) -> "NucleotideTokenizer":
        return cls(**settings)

    def __repr__(self) -> str:
        return f"NucleotideTokenizer(mode={self.mode!r}, policy={self.policy!r})"

    def token_to_id(self, token: str) -> int:
        if self.mode == "nucleotide":
            return NUCLEOTIDE_VOCAB.index(token)
        specials = {"<pad>": self.pad_id, "<bos>": self.bos_id, "<eos>": self.eos_id, "<mask>": self.mask_id}
        return specials[token] if token in specials else ord(token)

    def id_to_token(self, idx: int) -> str:
        if self.mode == "nucleotide":
            return NUCLEOTIDE_VOCAB[idx]
        specials = {self.pad_id: "<pad>", self.bos_id: "<bos>", self.eos_id: "<eos>", self.mask_id: "<mask>"}
        return specials.get(idx, chr(idx))

    # ----------------------------------------------------------------------------- encoding
    def _encode_array(self, seq: str, record: str | None) -> tuple[np.ndarray, np.ndarray]:
        where = f"record {record!r}" if record is not None else "sequence"
        if not isinstance(seq, str):
            raise TypeError(f"{where}: expected a str, got {type(seq).__name__}")
        if len(seq) == 0:
            raise SequenceError(f"{where} is empty: there is nothing to encode")
        try:
            raw = np.frombuffer(seq.encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError as e:
            raise SequenceError(
                f"{where}, position {e.start + 1}: character {seq[e.start]!r} is not a DNA letter "
                "(A C G T N, or an IUPAC ambiguity letter); remove it or fix the file"
            ) from None
        ids = self._lookup[raw]
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            pos = int(bad[0])
            char = seq[pos]
            if ids[pos] == -2:
                raise SequenceError(
                    f"{where}, position {pos + 1}: IUPAC ambiguity letter {char!r} is rejected under "
                    "policy='strict'; use policy='lenient' to read it as N"
                )
            raise SequenceError(
                f"{where}, position {pos + 1}: character {char!r} is not a DNA letter "
                f"(A C G T N, or an IUPAC ambiguity letter); {bad.size} such position(s) in all"
            )
        soft = (raw >= ord("a")) & (raw <= ord("z"))
        return ids.astype(np.int64), soft

    def encode(
        self,
        seq: str,
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        return_soft_mask: bool = False,
        record: str | None = None,
    ):
        """Encode one sequence into a 1-D ``int64`` tensor of ids.

        Args:
            seq: the DNA letters (no whitespace).
            add_bos / add_eos: prepend / append the special markers.
            return_soft_mask: also return a bool tensor, True where the input letter was lowercase
                (False on special markers).
            record: a name used in error messages (a FASTA header, a CSV row).
        """
        ids, soft = self._encode_array(seq, record)
        if add_bos:
            ids = np.concatenate([[self.bos_id], ids])
            soft = np.concatenate([[False], soft])
        if add_eos:
            ids = np.concatenate([ids, [self.eos_id]])
            soft = np.concatenate([soft, [False]])
        ids_t = torch.from_numpy(ids)
        if return_soft_mask:
            return ids_t, torch.from_numpy(soft.copy())
        return ids_t

    def batch_encode(
        self,
        seqs: Sequence[str],
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        return_soft_mask: bool = False,
        records: Iterable[str] | None = None,
    ) -> dict:
        """Encode several sequences into one right-padded batch.

        Returns a dict with ``input_ids`` (B, L) int64 padded with ``pad_id``, ``mask`` (B, L) bool
        (True on real tokens) and, when asked, ``soft_mask`` (B, L) bool.
        """
        if len(seqs) == 0:
            raise SequenceError("batch_encode got no sequences")
        names = list(records) if records is not None else [f"#{i}" for i in range(len(seqs))]
        encoded = [
            self.encode(s, add_bos=add_bos, add_eos=add_eos, return_soft_mask=True, record=n)
            for s, n in zip(seqs, names)
        ]
        out = self.pad_ids([ids for ids, _ in encoded])
        if return_soft_mask:
            soft_mask = torch.zeros_like(out["mask"])
            for row, (_, soft) in enumerate(encoded):
                soft_mask[row, : len(soft)] = soft
            out["soft_mask"] = soft_mask
        return out

    def pad_ids(self, ids_list: Sequence[torch.Tensor]) -> dict:
        """Right-pad 1-D id tensors into ``input_ids`` (B, L) padded with ``pad_id`` and ``mask``
        (B, L), True on real tokens."""
        length = max(len(ids) for ids in ids_list)
        input_ids = torch.full((len(ids_list), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids_list), length), dtype=torch.bool)
        for row, ids in enumerate(ids_list):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = True
        return {"input_ids": input_ids, "mask": mask}

    def from_nucleotide_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids of the nucleotide table (what the data modules make) as this tokenizer's ids: the
        same tensor in nucleotide mode; ASCII codes, pad 0, BOS 254, EOS 255 in byte mode. Without
        it a byte-level model would read A (0) as its padding and never score an A."""
        if self.mode == "nucleotide":
            return ids
        if self._from_nucleotide.device != ids.device:  # once per device, not once per batch
            self._from_nucleotide = self._from_nucleotide.to(ids.device)
        return self._from_nucleotide[ids.long()]

    def decode(self, ids, *, skip_special: bool = True) -> str | list[str]:
        """Ids back to letters. A 2-D tensor gives one string per row (padding dropped)."""
        ids = torch.as_tensor(ids)
        if ids.dim() == 2:
            return [self.decode(row, skip_special=skip_special) for row in ids]
        if ids.dim() != 1:
            raise ValueError(f"decode takes a 1-D or 2-D tensor of ids, got shape {tuple(ids.shape)}")
        specials = {self.pad_id, self.bos_id, self.eos_id}
        out = []
        for i in ids.tolist():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
            if skip_special and i in specials:
                continue
            out.append(self.id_to_token(i))
        return "".join(out)

    # ----------------------------------------------------------------------- reverse complement
    _COMPLEMENT = str.maketrans("ACGTNacgtnRYSWKMBDHVryswkmbdhv", "TGCANtgcanYRSWMKVHDByrswmkvhdb")

    def reverse_complement(self, seq, mask: torch.Tensor | None = None):
        """Reverse complement of a string or of an id tensor.

        Strings keep their case and complement IUPAC letters too. For ids, (L,) or right-padded
        (B, L) with ``mask``: each row's real tokens are reversed and complemented in place and the
        padding stays at the right; N and special ids are kept as they are.
        """
        if isinstance(seq, str):
            return seq.translate(self._COMPLEMENT)[::-1]
        ids = torch.as_tensor(seq)
        comp = self._complement_ids.to(ids.device)[ids]
        if ids.dim() == 1 and mask is None:
            return comp.flip(0)
        if ids.dim() == 1:
            ids, comp, mask = ids[None], comp[None], mask[None]
            return self._rc_padded(comp, mask)[0]
        if mask is None:
            return comp.flip(-1)
        return self._rc_padded(comp, mask)

    @staticmethod
    def _rc_padded(comp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Position t of a row of length n takes position n - 1 - t; padding stays put.
        lengths = mask.sum(-1, keepdim=True)  # (B, 1)
        pos = torch.arange(comp.shape[-1], device=comp.device).expand_as(comp)
        src = torch.where(mask, lengths - 1 - pos, pos)
        return torch.gather(comp, -1, src)
