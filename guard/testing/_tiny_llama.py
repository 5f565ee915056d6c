"""Build and train the tiny Llama Guard 4 stand-in (see guard.testing.tiny)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import (
    Llama4Config,
    Llama4ForConditionalGeneration,
    Llama4ImageProcessor,
    Llama4Processor,
    PreTrainedTokenizerFast,
)

from guard.core.prompts import render
from guard.testing._tiny_common import fit, save_atomically, train_llama_tokenizer
from guard.testing.tiny import LLAMA4_SPECIAL_TOKENS, GuardExample

TILE = 28  # pixels per tile side; patches of 7 give 16 patches, 4 tokens after pixel shuffle
PATCH = 7
MAX_STEPS = 600

# A rewrite of the official Llama Guard 4 chat template's behaviour, shipped with the tiny
# processor so that the plain transformers recipe (apply_chat_template) works on it too. It is
# not part of the training: guard.testing.tiny rewrites it into a cached build when it changes.
CHAT_TEMPLATE = (
    "{%- if messages|length % 2 == 0 -%}{%- set role = 'Agent' -%}"
    "{%- else -%}{%- set role = 'User' -%}{%- endif -%}"
    "{%- if excluded_category_keys is not defined -%}{%- set excluded_category_keys = [] -%}"
    "{%- endif -%}"
    "{%- set ns = namespace(contains_image=false) -%}"
    "{%- for message in messages -%}{%- if message['content'] is not string -%}"
    "{%- for part in message['content'] | selectattr('type', 'equalto', 'image') -%}"
    "{%- set ns.contains_image = true -%}{%- endfor -%}{%- endif -%}{%- endfor -%}"
    "{%- if categories is not defined -%}{%- set categories = {"
    + ", ".join(f'"S{i}": "{name}."' for i, name in enumerate([
        "Violent Crimes", "Non-Violent Crimes", "Sex Crimes", "Child Exploitation", "Defamation",
        "Specialized Advice", "Privacy", "Intellectual Property", "Indiscriminate Weapons",
        "Hate", "Self-Harm", "Sexual Content", "Elections", "Code Interpreter Abuse"], start=1))
    + "} -%}{%- endif -%}"
    "{{- bos_token + '<|header_start|>user<|header_end|>\\n\\nTask: Check if there is unsafe "
    "content in \\'' + role + '\\' messages in conversations according to our safety policy "
    "with the below categories.\\n\\n<BEGIN UNSAFE CONTENT CATEGORIES>\\n' -}}"
    "{%- for key in categories -%}{%- if key not in excluded_category_keys and not "
    "(key == 'S14' and ns.contains_image) -%}{{- key + ': ' + categories[key] + '\\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{{- '<END UNSAFE CONTENT CATEGORIES>\\n\\n<BEGIN CONVERSATION>\\n' -}}"
    "{%- for message in messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{%- set speaker = 'User: ' -%}"
    "{%- else -%}{%- set speaker = 'Agent: ' -%}{%- endif -%}"
    # A plain string is one text part here, as in Guard Lab (the official template drops it).
    "{%- if message['content'] is string -%}"
    "{{- speaker + message['content'] | trim + '\\\\n\\\\n\\n\\n' -}}{%- else -%}"
    # One block per text part; the message's images go with the first.
    "{%- set images = namespace(tokens='') -%}"
    "{%- for part in message['content'] | selectattr('type', 'equalto', 'image') -%}"
    "{%- set images.tokens = images.tokens + '<|image|>' -%}{%- endfor -%}"
    "{%- for part in message['content'] | selectattr('type', 'equalto', 'text') -%}"
    "{{- speaker + images.tokens + part['text'] | trim + '\\\\n\\\\n\\n\\n' -}}"
    "{%- set images.tokens = '' -%}{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<END CONVERSATION>\\n\\nProvide your safety assessment for ONLY THE LAST ' + role + "
    "' message in the above conversation:\\n - First line must read \\'safe\\' or \\'unsafe\\'.\\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories. "
    "<|eot|><|header_start|>assistant<|header_end|>' -}}"
)


def build_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    return train_llama_tokenizer(corpus, LLAMA4_SPECIAL_TOKENS, bos="<|begin_of_text|>",
                                 eos="<|eot|>", pad="<|finetune_right_pad|>")


def build_llama_guard(out_dir: Path, examples: Mapping[str, GuardExample], corpus: list[str]) -> None:
    torch.manual_seed(0)
    tokenizer = build_tokenizer(corpus)
    image_processor = Llama4ImageProcessor(size={"height": TILE, "width": TILE}, max_patches=4)
    tokenizer.chat_template = CHAT_TEMPLATE
    processor = Llama4Processor(image_processor=image_processor, tokenizer=tokenizer,
                                patch_size=PATCH, pixel_shuffle_ratio=0.5,
                                chat_template=CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    eos = [ids("<|end_of_text|>"), ids("<|eom|>"), ids("<|eot|>")]
    config = Llama4Config(
        vision_config=dict(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
            vision_output_dim=64, projector_input_dim=64, projector_output_dim=64,
            image_size=TILE, patch_size=PATCH, pixel_shuffle_ratio=0.5),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            intermediate_size_mlp=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
            moe_layers=[], bos_token_id=ids("<|begin_of_text|>"), eos_token_id=eos,
            pad_token_id=ids("<|finetune_right_pad|>"), attention_chunk_size=8192),
        boi_token_index=ids("<|image_start|>"), eoi_token_index=ids("<|image_end|>"),
        image_token_index=ids("<|patch|>"),
    )
    model = Llama4ForConditionalGeneration(config)
    _train(model, processor, list(examples.values()))
    # The real checkpoint ships attention_chunk_size = null; keep the stand-in faithful to that.
    model.config.text_config.attention_chunk_size = None
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = ids("<|finetune_right_pad|>")
    model.generation_config.do_sample = False
    save_atomically(out_dir, model, processor)


def _batch(processor: Llama4Processor, examples: list[GuardExample]) -> dict[str, torch.Tensor]:
    tokenizer = processor.tokenizer
    texts, images = [], []
    for example in examples:
        conversation = example.conversation()
        prompt = render(conversation, example.excluded)
        texts.append(prompt + "\n\n" + example.answer + "<|eot|>")
        images.extend(conversation.images)
    batch = processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                      padding_side="right", add_special_tokens=False)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    header_end = tokenizer.convert_tokens_to_ids("<|header_end|>")
    for row in range(labels.shape[0]):
        # Learn only the answer: everything up to the last <|header_end|> is prompt.
        last = (batch["input_ids"][row] == header_end).nonzero().max().item()
        labels[row, : last + 1] = -100
    batch["labels"] = labels
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].float()
    return dict(batch)


def _train(model: Llama4ForConditionalGeneration, processor: Llama4Processor,
           examples: list[GuardExample]) -> None:
    fit(model, _batch(processor, examples), lr=3e-3, max_steps=MAX_STEPS, check_every=50)
