"""Calibration batches: seeded self-generated sequences and text windows (liftexport.calibrate)."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from liftexport.calibrate import self_generated, text_windows
from liftexport.errors import ConfigError
from tiny import CONFIGS, _tokenizer


@pytest.fixture(scope="module")
def tiny_llama():
    return transformers.AutoModelForCausalLM.from_config(CONFIGS["llama"]()).eval()


def test_self_generated_is_seeded_and_bos_started(tiny_llama):
    tok = _tokenizer()
    a = self_generated(tiny_llama, tok, 3, 12, seed=1, batch=2, progress=False)
    b = self_generated(tiny_llama, tok, 3, 12, seed=1, batch=2, progress=False)
    c = self_generated(tiny_llama, tok, 3, 12, seed=2, batch=2, progress=False)
    assert a.shape == (3, 12) and (a == b).all() and not (a == c).all()
    assert (a[:, 0] == tok.bos_token_id).all()


def test_random_first_token_is_ordinary_vocabulary(tiny_llama):
    tok = _tokenizer()
    t = self_generated(tiny_llama, tok, 8, 6, seed=0, batch=8, first="random", progress=False)
    assert t.shape == (8, 6) and (t[:, 0] == tok.bos_token_id).all()
    special = set(tok.all_special_ids)
    assert not any(int(x) in special for x in t[:, 1]) and len(set(t[:, 1].tolist())) > 1


@pytest.mark.parametrize("chat", [False, True])
def test_prompted_rows_keep_their_prompt_and_match_unpadded_sampling(tiny_llama, chat):
    """first="prompts": left-padded batches give each row exactly what that row alone would give
    (checked near-greedy, temperature 1e-4), prompt tokens first; seeded."""
    from liftexport.calibrate import WRITING_PROMPTS, _prompt_ids

    tok = _tokenizer()
    if chat:
        tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    peaky = copy.deepcopy(tiny_llama)  # wide logit gaps: near-greedy picks do not hinge on rounding
    with torch.no_grad():
        peaky.lm_head.weight.mul_(100.0)
    kw = dict(seed=3, first="prompts", temperature=1e-4, progress=False)
    batched = self_generated(peaky, tok, 5, 40, batch=5, **kw)
    alone = [self_generated(peaky, tok, 5, 40, batch=1, **kw)[i] for i in range(5)]
    assert batched.shape == (5, 40)
    diff = [(batched[i] != alone[i]).nonzero().flatten()[:3].tolist() for i in range(5)]
    assert all(not d for d in diff), diff
    prompts = [_prompt_ids(tok, p) for p in WRITING_PROMPTS]
    starts = [[j for j, p in enumerate(prompts) if row[: min(len(p), 39)].tolist() == p[:39]] for row in batched]
    assert all(starts) and len({tuple(s) for s in starts}) > 1  # each row starts with a prompt (cut to 39), not all one
    other = self_generated(tiny_llama, tok, 5, 40, batch=5, seed=4, first="prompts", progress=False)
    assert not (other == batched).all()


def test_bad_first_and_short_text_are_clear_errors(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match="calibration start"):
        self_generated(tiny_llama, _tokenizer(), 1, 4, seed=0, first="middle", progress=False)
    f = tmp_path / "short.txt"
    f.write_text("only a few words")
    with pytest.raises(ConfigError, match="fewer than --calib-seq-len"):
        text_windows(_tokenizer(), [f], 2, 64, seed=0)
    with pytest.raises(ConfigError, match="no such text file"):
        text_windows(_tokenizer(), [tmp_path / "missing.txt"], 2, 64, seed=0)
