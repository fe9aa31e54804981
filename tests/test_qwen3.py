"""Qwen3 behaviour end to end: the real Qwen3 chat template and architecture, thinking on and off, reasoning split.

The model is `tiny_qwen3.chain_qwen3`: weights set by hand so that after the generation prompt it says
`<think>Hmm</think>Paris<|im_end|>`, and with thinking off (the template closes an empty think block) `Paris<|im_end|>`.
"""
import pytest
from conftest import start_server
from tiny_qwen3 import chain_qwen3


@pytest.fixture(scope='module')
def tiny_qwen3(tmp_path_factory): return chain_qwen3(tmp_path_factory.mktemp('tiny-qwen3'))


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
