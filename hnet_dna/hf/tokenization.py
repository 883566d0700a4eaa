"""The nucleotide tokenizer as a ``transformers`` tokenizer: hnet_dna's ids (A C G T N = 0-4,
``<pad>`` 5, ``<bos>`` 6, ``<eos>`` 7), one token per base, right padding, no special tokens added
(hnet_dna's models are trained without them). Letters are read by
:class:`~hnet_dna.tokenizer.NucleotideTokenizer`: lowercase is uppercased, IUPAC ambiguity letters
become N (``policy="lenient"``) or are refused (``"strict"``), anything else is refused with its
position."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizer

from ..tokenizer import NUCLEOTIDE_VOCAB, NucleotideTokenizer
from ..weights import TOKENIZER_NAME, write_transformers_files

__all__ = ["HNetDNATokenizer"]


class HNetDNATokenizer(PreTrainedTokenizer):
    vocab_files_names: dict[str, str] = {}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, policy: str = "lenient", mode: str = "nucleotide", **kwargs):
        if mode != "nucleotide":
            raise ValueError(f"HNetDNATokenizer reads the nucleotide table only; this folder's tokenizer mode is {mode!r} "
                             "(the official byte-level checkpoints): use hnet_dna.NucleotideTokenizer(mode='byte')")
        self.dna = NucleotideTokenizer(mode=mode, policy=policy)
        self._vocab = {token: i for i, token in enumerate(NUCLEOTIDE_VOCAB)}
        for key, token in (("pad_token", "<pad>"), ("bos_token", "<bos>"), ("eos_token", "<eos>"), ("unk_token", "N"),
                           ("mask_token", "<mask>")):
            kwargs.setdefault(key, token)
        kwargs.setdefault("padding_side", "right")
        super().__init__(**kwargs)
        self.policy, self.mode = policy, mode

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [NUCLEOTIDE_VOCAB[i] for i in self.dna.encode(text).tolist()]

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, self.dna.n_id)

    def _convert_id_to_token(self, index: int) -> str:
        return NUCLEOTIDE_VOCAB[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(t for t in tokens if len(t) == 1)

    def reverse_complement(self, sequence: str) -> str:
        return self.dna.reverse_complement(sequence)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is fixed (hnet_dna.tokenizer.NUCLEOTIDE_VOCAB)

    # hnet_dna's folders keep the tokenizer's settings in tokenizer.json, the name transformers gives
    # a fast tokenizer's file: read and write them here, not through transformers' file search.
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "HNetDNATokenizer":
        """The tokenizer of a folder written by hnet_dna's ``save_pretrained`` (its ``tokenizer.json``
        settings; none: the defaults)."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            raise OSError(f"{pretrained_model_name_or_path}: not a folder; HNetDNATokenizer loads a local folder written "
                          "by save_pretrained")
        settings = json.loads((folder / TOKENIZER_NAME).read_text()) if (folder / TOKENIZER_NAME).is_file() else {}
        return cls(**settings)

    def save_pretrained(self, save_directory, *args, **kwargs) -> tuple[str, ...]:
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"mode": self.mode, "policy": self.policy}
        (folder / TOKENIZER_NAME).write_text(json.dumps(settings, indent=2) + "\n")
        write_transformers_files(folder, settings)
        return (str(folder / TOKENIZER_NAME), str(folder / "tokenizer_config.json"))
