"""The ``transformers`` config of an hnet_dna model: the ``config.json`` hnet_dna writes (every
:class:`~hnet_dna.config.HNetConfig` field at the top level) read as a ``PretrainedConfig``, plus
the classification head's settings (``pooling``, ``rc_conjoin``) for
:class:`~hnet_dna.hf.modeling.HNetDNAForSequenceClassification`."""

from __future__ import annotations

from dataclasses import fields

from transformers import PretrainedConfig

from ..config import HNetConfig
from ..weights import TRANSFORMERS_MODEL_TYPE

MODEL_TYPE = TRANSFORMERS_MODEL_TYPE
HNET_FIELDS = tuple(f.name for f in fields(HNetConfig))


class HNetDNAConfig(PretrainedConfig):
    """An :class:`HNetConfig`'s fields as attributes (``config.d_model``, ``config.arch_layout``...),
    checked by ``HNetConfig`` when built; :meth:`to_hnet_config` gives the model's config back.

    Args:
        tokenizer_policy: ``lenient`` (IUPAC ambiguity letters read as N) or ``strict``.
        pooling, rc_conjoin: the sequence classifier's pooling and strand averaging (see
            :class:`~hnet_dna.model.heads.HNetForSequenceClassification`).
        **kwargs: HNetConfig fields (none: the ``tiny-hnet`` preset) and ``PretrainedConfig``'s
            (``num_labels``, ``id2label``...).
    """

    model_type = MODEL_TYPE

    def __init__(self, tokenizer_policy: str = "lenient", pooling: str = "mean", rc_conjoin: bool = False, **kwargs):
        given = {k: kwargs.pop(k) for k in HNET_FIELDS if k in kwargs}
        base = {} if given else HNetConfig.from_preset("tiny-hnet").to_dict()
        config = HNetConfig.from_dict({**base, **given}, source="HNetDNAConfig")
        kwargs.setdefault("tie_word_embeddings", config.tie_embeddings)
        super().__init__(**kwargs)
        for key, value in config.to_dict().items():
            setattr(self, key, value)
        self.bidirectional = config.bidirectional  # to_dict leaves it out of causal configs
        self.tokenizer_policy, self.pooling, self.rc_conjoin = tokenizer_policy, pooling, rc_conjoin
        self.hidden_size = config.d_model[0]  # what transformers utilities read as the model's width

    def to_hnet_config(self) -> HNetConfig:
        return HNetConfig.from_dict({k: getattr(self, k) for k in HNET_FIELDS}, source="HNetDNAConfig")
