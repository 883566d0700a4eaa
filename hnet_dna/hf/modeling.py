"""``transformers`` model classes over hnet_dna's models: :class:`HNetDNAModel` (hidden states),
:class:`HNetDNAForCausalLM`, :class:`HNetDNAForMaskedLM` (the bidirectional H-Net) and
:class:`HNetDNAForSequenceClassification`.

Each holds the hnet_dna model as ``self.hnet`` and forwards to it: the logits, losses and weights
are that model's. ``attention_mask`` is hnet_dna's ``mask`` (1 on real bases, right padding).
``from_pretrained`` and ``save_pretrained`` read and write hnet_dna's folders (what every hnet_dna
``save_pretrained`` writes, the shipped default model's included) with hnet_dna's own loader, local
folders only: transformers' loading options (``device_map``, quantisation) do not apply; ``dtype``
does. A state dict without the ``hnet.`` prefix (hnet_dna's own) loads too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput, MaskedLMOutput, SequenceClassifierOutput

from ..model import HNetForCausalLM, HNetForMaskedLM
from ..model.heads import HEAD_NAME, HNetForSequenceClassification
from ..tokenizer import NucleotideTokenizer
from ..weights import CheckpointError
from .configuration import HNetDNAConfig

__all__ = ["HNetDNAModel", "HNetDNAForCausalLM", "HNetDNAForMaskedLM", "HNetDNAForSequenceClassification"]


class HNetDNAPreTrainedModel(PreTrainedModel):
    config_class = HNetDNAConfig
    base_model_prefix = "hnet"
    main_input_name = "input_ids"
    _no_split_modules: list[str] = []

    def __init__(self, config: HNetDNAConfig):
        super().__init__(config)
        # hnet_dna's state dicts (no "hnet." prefix) load as they are, e.g. a Trainer's best checkpoint
        self._register_load_state_dict_pre_hook(_add_prefix, with_module=True)

    def _init_weights(self, module) -> None:
        pass  # hnet_dna's modules initialise themselves (the official init) when built

    def _backbone_lm(self) -> HNetForCausalLM:
        raise NotImplementedError

    def get_input_embeddings(self):
        return self._backbone_lm().embeddings

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config: HNetDNAConfig | None = None, **kwargs):
        """A folder written by hnet_dna's ``save_pretrained`` (or this class's), read by hnet_dna's
        loader, in eval mode. ``dtype`` / ``torch_dtype`` and a device ``device_map`` ("cpu",
        "cuda:0") are honoured; transformers' other loading options are not."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            raise OSError(f"{pretrained_model_name_or_path}: not a folder; hnet_dna's transformers classes load a local "
                          "folder written by save_pretrained (download a Hub repository first)")
        if config is None:
            config = HNetDNAConfig.from_pretrained(folder, **{k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_KEYS})
        model = cls._from_folder(folder, config)
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        device = kwargs.get("device_map")
        if isinstance(device, (str, torch.device)) and str(device) != "auto":
            model = model.to(device)
        return model.eval()

    @classmethod
    def _from_folder(cls, folder: Path, config: HNetDNAConfig):
        lm = HNetForCausalLM.from_pretrained(folder)
        _sync(config, lm)
        return cls(config, lm)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """hnet_dna's folder (see :func:`hnet_dna.weights.save_pretrained`), which the Auto classes
        read back. transformers' saving options (sharding, hub upload) do not apply."""
        self.hnet.save_pretrained(save_directory)


_CONFIG_KEYS = {"num_labels", "id2label", "label2id", "pooling", "rc_conjoin", "problem_type"}


def _add_prefix(module, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "hnet.")]:
        state_dict[prefix + "hnet." + key[len(prefix):]] = state_dict.pop(key)


def _sync(config: HNetDNAConfig, lm: HNetForCausalLM) -> None:
    """The config's model fields from the loaded model (the folder's own config wins)."""
    for key, value in lm.config.to_dict().items():
        setattr(config, key, value)
    config.tokenizer_policy = lm.tokenizer.policy


def _hnet_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if attention_mask is None else attention_mask.to(device=input_ids.device, dtype=torch.bool)


def _lm_for(config: HNetDNAConfig) -> HNetForCausalLM:
    """A fresh hnet_dna model of ``config``: the masked LM when it is bidirectional."""
    tokenizer = NucleotideTokenizer(mode=config.tokenizer_mode, policy=config.tokenizer_policy)
    hnet_config = config.to_hnet_config()
    return (HNetForMaskedLM if hnet_config.bidirectional else HNetForCausalLM)(hnet_config, tokenizer)


def _lm_forward(wrapper, input_ids, attention_mask, labels, output_hidden_states):
    """hnet_dna's LM output and, if asked, (the embeddings, the last hidden states before the LM
    head), captured on the way (no second pass)."""
    want_hidden = output_hidden_states if output_hidden_states is not None else wrapper.config.output_hidden_states
    lm = wrapper.hnet
    with _Captured(lm.embeddings, lm.lm_head, active=bool(want_hidden)) as seen:
        out = lm(input_ids, mask=_hnet_mask(input_ids, attention_mask), labels=labels)
    return out, ((seen.inputs[0][1], seen.inputs[1][0]) if want_hidden else None)


class _Captured:
    """The input of ``modules`` during one forward (hidden states without a second pass)."""

    def __init__(self, *modules: torch.nn.Module, active: bool = True):
        self.modules, self.active, self.inputs, self.handles = modules, active, [], []

    def __enter__(self):
        if self.active:
            self.handles = [m.register_forward_hook(lambda _m, args, out: self.inputs.append((args[0], out)))
                            for m in self.modules]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


class HNetDNAForCausalLM(HNetDNAPreTrainedModel):
    """hnet_dna's :class:`~hnet_dna.model.HNetForCausalLM` as a transformers causal LM.

    ``labels`` are aligned with ``input_ids`` (shifted inside, as transformers does); the loss is
    hnet_dna's: next-base cross-entropy plus the routing's ratio loss. ``output_hidden_states``:
    (the embeddings, the last hidden states before the LM head), (B, L, D) each. ``generate``
    is hnet_dna's sampler (its own caches): ``max_new_tokens``, ``do_sample``, ``temperature``,
    ``top_p``; transformers' other generation options do not apply."""

    def __init__(self, config: HNetDNAConfig, hnet: HNetForCausalLM | None = None):
        super().__init__(config)
        if config.bidirectional:
            raise CheckpointError("a bidirectional config is a masked LM, which does not predict the next base; "
                                  "use AutoModelForMaskedLM (or AutoModel for its hidden states)")
        self.hnet = hnet or HNetForCausalLM(config.to_hnet_config(), NucleotideTokenizer(
            mode=config.tokenizer_mode, policy=config.tokenizer_policy))
        self.post_init()

    def _backbone_lm(self) -> HNetForCausalLM:
        return self.hnet

    @classmethod
    def _from_folder(cls, folder: Path, config: HNetDNAConfig):
        if config.bidirectional:
            raise CheckpointError(f"{folder}: a masked LM (bidirectional H-Net), which does not predict the next base; "
                                  "load it with AutoModelForMaskedLM (or AutoModel for its hidden states)")
        return super()._from_folder(folder, config)

    def get_output_embeddings(self):
        return self.hnet.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> CausalLMOutput:
        out, hidden = _lm_forward(self, input_ids, attention_mask, labels, output_hidden_states)
        return CausalLMOutput(loss=out.loss, logits=out.logits, hidden_states=hidden)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, **unused) -> torch.Tensor:
        """(B, L + max_new_tokens) ids: each prompt followed by its new bases, right-padded."""
        out = self.hnet.generate(input_ids, mask=_hnet_mask(input_ids, attention_mask), max_new_tokens=max_new_tokens,
                                 temperature=temperature if do_sample else 0.0, top_p=top_p, generator=generator)
        return out.sequences


class HNetDNAForMaskedLM(HNetDNAPreTrainedModel):
    """hnet_dna's :class:`~hnet_dna.model.HNetForMaskedLM` (the bidirectional H-Net) as a
    transformers masked LM: ``input_ids`` with ``<mask>`` (the tokenizer's ``mask_token``, id 8) at
    hidden bases; ``labels`` (B, L) the true ids there and -100 elsewhere (transformers'
    ``DataCollatorForLanguageModeling`` makes both); the loss is hnet_dna's (masked-base
    cross-entropy plus the routing's ratio loss)."""

    def __init__(self, config: HNetDNAConfig, hnet: HNetForMaskedLM | None = None):
        super().__init__(config)
        self.hnet = hnet or HNetForMaskedLM(config.to_hnet_config(), NucleotideTokenizer(
            mode=config.tokenizer_mode, policy=config.tokenizer_policy))
        self.post_init()

    def _backbone_lm(self) -> HNetForMaskedLM:
        return self.hnet

    @classmethod
    def _from_folder(cls, folder: Path, config: HNetDNAConfig):
        if not config.bidirectional:
            raise CheckpointError(f"{folder}: a causal LM; load it with AutoModelForCausalLM (a masked-LM head needs a "
                                  "model pretrained by masked language modelling)")
        return super()._from_folder(folder, config)

    def get_output_embeddings(self):
        return self.hnet.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MaskedLMOutput:
        out, hidden = _lm_forward(self, input_ids, attention_mask, labels, output_hidden_states)
        return MaskedLMOutput(loss=out.loss, logits=out.logits, hidden_states=hidden)


class HNetDNAModel(HNetDNAPreTrainedModel):
    """The H-Net's last hidden states (B, L, D), before the LM head (``AutoModel``); the LM head's
    weights load and save with the rest but take no part."""

    def __init__(self, config: HNetDNAConfig, hnet: HNetForCausalLM | None = None):
        super().__init__(config)
        self.hnet = hnet or _lm_for(config)
        self.post_init()

    def _backbone_lm(self) -> HNetForCausalLM:
        return self.hnet

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, **kwargs) -> BaseModelOutput:
        mask = self.hnet._check_inputs(input_ids, _hnet_mask(input_ids, attention_mask), None, None)
        embedded = self.hnet.embeddings(input_ids)
        hidden, _ = self.hnet.backbone(embedded, mask)  # (B, L, D)
        want_hidden = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(embedded, hidden) if want_hidden else None)


class HNetDNAForSequenceClassification(HNetDNAPreTrainedModel):
    """hnet_dna's :class:`~hnet_dna.model.heads.HNetForSequenceClassification` as a transformers
    classifier: ``num_labels`` classes (names from ``id2label``), ``pooling`` and ``rc_conjoin`` from
    the config. From a language model's folder the head starts untrained, as transformers'
    classifiers do; from a classifier's folder (``classifier.json``) it is that classifier. ``labels``
    (B,) class indices give the cross-entropy."""

    def __init__(self, config: HNetDNAConfig, hnet: HNetForCausalLM | HNetForSequenceClassification | None = None):
        super().__init__(config)
        if not isinstance(hnet, HNetForSequenceClassification):
            backbone = hnet or _lm_for(config)
            names = [str(config.id2label[i]) for i in range(config.num_labels)]
            hnet = HNetForSequenceClassification(backbone, names, pooling=config.pooling, rc_conjoin=config.rc_conjoin)
        self.hnet = hnet
        self.post_init()

    def _backbone_lm(self) -> HNetForCausalLM:
        return self.hnet.backbone

    @classmethod
    def _from_folder(cls, folder: Path, config: HNetDNAConfig):
        if not (folder / HEAD_NAME).is_file():
            return super()._from_folder(folder, config)
        classifier = HNetForSequenceClassification.from_pretrained(folder)
        _sync(config, classifier.backbone)
        names = classifier.class_names
        if config.num_labels != len(names) and "id2label" not in config.to_diff_dict():
            config.num_labels = len(names)
        if config.num_labels != len(names):
            raise CheckpointError(f"{folder}: its classifier has {len(names)} classes ({', '.join(names)}), "
                                  f"and {config.num_labels} were asked for; leave num_labels out to load it")
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        config.pooling, config.rc_conjoin = classifier.pooling, classifier.rc_conjoin
        return cls(config, classifier)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None, **kwargs) -> SequenceClassifierOutput:
        out = self.hnet(input_ids, mask=_hnet_mask(input_ids, attention_mask), labels=labels)
        return SequenceClassifierOutput(loss=out.loss, logits=out.logits)
