"""Tiny random CLIP, SigLIP and OWLv2 models with a word-level tokenizer, saved like hub folders.

Nothing is downloaded: the tokenizer is a `tokenizers` WordLevel model over the words the tests
use (the templates, PSG's readable names and a few extra), wrapped in `PreTrainedTokenizerFast`.
Its end-of-text token has the highest id, because OWLv2 pools the text at `input_ids.argmax()`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPModel,
    Owlv2Config,
    Owlv2ForObjectDetection,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
)

from relate_anything import psg
from relate_anything.naming.vocabulary import DEFAULT_TEMPLATES, psg_readable_name

EXTRA_WORDS = ["dog", "stick", "sand", "cat", "the", "red", "umbrella", "man", "ball"]
SPECIALS = ["<pad>", "<unk>", "<bos>"]  # "<eos>" comes last, see the module docstring
PAD, UNK, BOS = 0, 1, 2

_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer: "<bos> words <eos>", padding with "<pad>"."""
    words: list[str] = []
    names = [psg_readable_name(name) for name in psg.categories()]
    sentences = [template.format(name) for template in DEFAULT_TEMPLATES for name in names]
    for text in sentences + EXTRA_WORDS:
        for word in pre_tokenizers.Whitespace().pre_tokenize_str(text.lower()):
            if word[0] not in words:
                words.append(word[0])
    vocab = {token: index for index, token in enumerate(SPECIALS + words + ["<eos>"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", BOS), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def _text_config(tokenizer: PreTrainedTokenizerFast, context: int) -> dict:
    eos = tokenizer.convert_tokens_to_ids("<eos>")
    return _TOWER | {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": context,
        "bos_token_id": BOS,
        "eos_token_id": eos,
        "pad_token_id": PAD,
    }


def tiny_clip(seed: int = 0) -> tuple[CLIPModel, PreTrainedTokenizerFast]:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config=_text_config(tokenizer, 24),
        vision_config=_TOWER | {"image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    return CLIPModel(config).eval(), tokenizer


def tiny_siglip(seed: int = 0) -> tuple[SiglipModel, PreTrainedTokenizerFast]:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = SiglipConfig(
        text_config=_text_config(tokenizer, 24), vision_config=_TOWER | {"image_size": 32, "patch_size": 8}
    )
    return SiglipModel(config).eval(), tokenizer


def tiny_owlv2(seed: int = 0) -> tuple[Owlv2ForObjectDetection, PreTrainedTokenizerFast]:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = Owlv2Config(
        text_config=_text_config(tokenizer, 16),
        vision_config=_TOWER | {"image_size": 32, "patch_size": 8},
        projection_dim=_TOWER["hidden_size"],  # OWL's class head maps image features to the text width
    )
    return Owlv2ForObjectDetection(config).eval(), tokenizer


def save(model, tokenizer, folder: Path, *, preprocessor: dict | None = None) -> Path:
    """`save_pretrained` both into `folder` (+ a preprocessor_config.json if given)."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder
