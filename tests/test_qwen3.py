"""Qwen3 behaviour end to end: the real Qwen3 chat template and architecture, thinking on and off, reasoning split.

No Qwen3 weights can be downloaded here, so the test builds a tiny Qwen3ForCausalLM whose weights are set by hand
to follow a fixed chain of tokens: attention and MLP outputs are zero, so each position's hidden state is its own
token's embedding, and the LM head maps the embedding of each token of the chain to the next one. After the
generation prompt (`...assistant\\n`) the model says `<think>Hmm</think>Paris<|im_end|>`; with thinking off the
template itself closes an empty think block (`...</think>\\n\\n`), after which the model says `Paris<|im_end|>`.
"""
from pathlib import Path
import pytest, torch
from conftest import start_server

FIXTURES = Path(__file__).parent/'fixtures'


@pytest.fixture(scope='module')
def tiny_qwen3(tmp_path_factory):
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM, GenerationConfig
    from hybrie.config import Catalog
    res = Catalog().resolve('smollm2-135m-instruct')
    tok = AutoTokenizer.from_pretrained(res.path, gguf_file=res.gguf_file)  # a byte-level BPE with ChatML tokens
    tok.add_tokens(['<think>', '</think>'])
    tok.chat_template = (FIXTURES/'qwen3_chat_template.jinja').read_text()
    ids = lambda s: tok.encode(s, add_special_tokens=False)
    nl, nlnl = ids('\n'), ids('\n\n')
    assert len(nl) == 1 and len(nlnl) == 1
    chain = [nl[0], *ids('<think>'), *ids('Hmm'), *ids('</think>'), *ids('Paris'), tok.convert_tokens_to_ids('<|im_end|>')]
    H = 64
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=H, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, tie_word_embeddings=False,
                      eos_token_id=chain[-1], bos_token_id=None, pad_token_id=chain[-1])
    torch.manual_seed(0)
    m = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(('o_proj.weight', 'down_proj.weight')): p.zero_()
        emb, head = m.model.embed_tokens.weight, m.lm_head.weight
        emb.zero_(); emb[:, H - 1] = 1.0  # every other token: a neutral direction
        head.zero_()
        for i, t in enumerate(chain[:-1]):
            emb[t].zero_(); emb[t, i] = 1.0
            head[chain[i + 1], i] = 10.0
        emb[nlnl[0]].zero_(); emb[nlnl[0], len(chain)] = 1.0          # after the template's empty think block
        head[ids('Paris')[0], len(chain)] = 10.0
        head[chain[-1], H - 1] = 10.0                                  # anything else: end the answer
    d = tmp_path_factory.mktemp('tiny-qwen3')
    m.save_pretrained(d); tok.save_pretrained(d)
    GenerationConfig(eos_token_id=chain[-1], pad_token_id=chain[-1]).save_pretrained(d)
    return d


@pytest.fixture(scope='module')
def qwen(tiny_qwen3):
    from openai import OpenAI
    with start_server('--model', str(tiny_qwen3), '--dtype', 'float32') as s:
        yield OpenAI(base_url=s.url, api_key='x', max_retries=0), str(tiny_qwen3)


def test_thinking_on_splits_reasoning(qwen):
    c, model = qwen
    r = c.chat.completions.create(model=model, messages=[{'role': 'user', 'content': 'Capital of France?'}], temperature=0,
                                  extra_body={'thinking_mode': 'on'})
    m = r.choices[0].message
    assert m.content == 'Paris'
    assert m.reasoning_content == 'Hmm' and m.model_extra['reasoning'] == 'Hmm'
    assert r.choices[0].finish_reason == 'stop'


def test_thinking_default_is_on_for_qwen3(qwen):
    c, model = qwen
    m = c.chat.completions.create(model=model, messages=[{'role': 'user', 'content': 'Capital?'}], temperature=0).choices[0].message
    assert (m.reasoning_content, m.content) == ('Hmm', 'Paris')


def test_thinking_off_uses_the_template_switch(qwen):
    c, model = qwen
    m = c.chat.completions.create(model=model, messages=[{'role': 'user', 'content': 'Capital?'}], temperature=0,
                                  extra_body={'thinking_mode': 'off'}).choices[0].message
    assert m.content == 'Paris' and getattr(m, 'reasoning_content', None) is None


def test_streamed_reasoning(qwen):
    c, model = qwen
    chunks = list(c.chat.completions.create(model=model, messages=[{'role': 'user', 'content': 'Capital?'}], temperature=0,
                                            stream=True, extra_body={'thinking_mode': True}))
    reasoning = ''.join(ch.choices[0].delta.model_extra.get('reasoning_content') or '' for ch in chunks)
    also = ''.join(ch.choices[0].delta.model_extra.get('reasoning') or '' for ch in chunks)
    content = ''.join(ch.choices[0].delta.content or '' for ch in chunks)
    assert (reasoning, also, content) == ('Hmm', 'Hmm', 'Paris')
    assert chunks[0].choices[0].delta.role == 'assistant'


def test_multi_turn_history_with_reasoning(qwen):
    c, model = qwen
    msgs = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Capital?'},
            {'role': 'assistant', 'content': 'Paris', 'reasoning_content': 'Hmm'}, {'role': 'user', 'content': 'Again?'}]
    m = c.chat.completions.create(model=model, messages=msgs, temperature=0).choices[0].message
    assert m.content == 'Paris'
