"""Qwen3 behaviour end to end: the real Qwen3 chat template and architecture, thinking on and off, reasoning split.

The model is `tiny_qwen3.chain_qwen3`: weights set by hand so that after the generation prompt it says
`<think>Hmm</think>Paris<|im_end|>`, and with thinking off (the template closes an empty think block) `Paris<|im_end|>`.
Its tokenizer also has Qwen's fill-in-the-middle tokens, and after `<|fim_middle|>` the model says `Paris` too.

The same model answers through the Responses, Messages and legacy completions APIs (reasoning items, thinking
blocks, raw prompts and fill-in-the-middle), with the official `openai` and `anthropic` SDKs.
"""
import anthropic, pytest
from conftest import start_server
from tiny_qwen3 import chain_qwen3


@pytest.fixture(scope='module')
def tiny_qwen3(tmp_path_factory): return chain_qwen3(tmp_path_factory.mktemp('tiny-qwen3'), fim=True)


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


# ---------------------------------------------------------------- the other APIs

@pytest.fixture(scope='module')
def qwen_ac(qwen):
    c, _ = qwen
    return anthropic.Anthropic(base_url=str(c.base_url).rstrip('/').removesuffix('/v1'), api_key='x', max_retries=0)


def test_responses_reasoning_item(qwen):
    c, model = qwen
    r = c.responses.create(model=model, input='Capital of France?', temperature=0)
    assert [o.type for o in r.output] == ['reasoning', 'message']
    assert r.output[0].summary[0].text == 'Hmm' and r.output_text == 'Paris'
    off = c.responses.create(model=model, input='Capital of France?', temperature=0, reasoning={'effort': 'none'})
    assert [o.type for o in off.output] == ['message'] and off.output_text == 'Paris'
    events = list(c.responses.create(model=model, input='Capital of France?', temperature=0, stream=True))
    assert ''.join(e.delta for e in events if e.type == 'response.reasoning_summary_text.delta') == 'Hmm'
    assert ''.join(e.delta for e in events if e.type == 'response.output_text.delta') == 'Paris'
    again = c.responses.create(model=model, input='And again?', previous_response_id=r.id, temperature=0)  # the reasoning goes back as history
    assert again.output_text == 'Paris'


def test_messages_thinking_blocks(qwen, qwen_ac):
    _, model = qwen
    msgs = [{'role': 'user', 'content': 'Capital of France?'}]
    m = qwen_ac.messages.create(model=model, max_tokens=2000, extra_body={'temperature': 0}, thinking={'type': 'enabled', 'budget_tokens': 1024}, messages=msgs)
    assert [(b.type, getattr(b, 'thinking', None) or getattr(b, 'text', None)) for b in m.content] == [('thinking', 'Hmm'), ('text', 'Paris')]
    off = qwen_ac.messages.create(model=model, max_tokens=50, extra_body={'temperature': 0}, thinking={'type': 'disabled'}, messages=msgs)
    assert [(b.type, b.text) for b in off.content] == [('text', 'Paris')]
    with qwen_ac.messages.stream(model=model, max_tokens=2000, extra_body={'temperature': 0}, thinking={'type': 'enabled', 'budget_tokens': 1024}, messages=msgs) as s:
        events = list(s)
        final = s.get_final_message()
    assert ''.join(e.delta.thinking for e in events if e.type == 'content_block_delta' and e.delta.type == 'thinking_delta') == 'Hmm'
    assert [b.type for b in final.content] == ['thinking', 'text'] and final.content[1].text == 'Paris'
    # the thinking block sent back in the next turn is read as the turn's reasoning
    turn = msgs + [{'role': 'assistant', 'content': m.content}, {'role': 'user', 'content': 'Again?'}]
    assert qwen_ac.messages.create(model=model, max_tokens=2000, extra_body={'temperature': 0}, thinking={'type': 'enabled', 'budget_tokens': 1024}, messages=turn).content[-1].text == 'Paris'


def test_completions_raw_prompt_is_not_templated_nor_split(qwen):
    c, model = qwen
    prompt = '<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n'
    r = c.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=10)
    assert r.choices[0].text == '<think>Hmm</think>Paris' and r.choices[0].finish_reason == 'stop'


def test_completions_fill_in_the_middle(qwen):
    c, model = qwen
    r = c.completions.create(model=model, prompt='def capital(', suffix='):\n    pass', temperature=0, max_tokens=10)
    assert r.choices[0].text == 'Paris'
    assert c.completions.create(model=model, prompt='def capital(', temperature=0, max_tokens=10).choices[0].text == ''  # no suffix: no FIM layout


# ---------------------------------------------------------------- tools chosen by the model, through the other APIs

CITY = {'type': 'object', 'properties': {'city': {'enum': ['Paris', 'Tokyo', 'Lima']}}, 'required': ['city'], 'additionalProperties': False}


@pytest.fixture(scope='module')
def caller(tmp_path_factory):
    "A tiny Qwen3 that says `<think>Hmm</think><tool_call>` (`<tool_call>` an added token, as in Qwen3's tokenizer): it reasons, then opens a call by itself."
    d = chain_qwen3(tmp_path_factory.mktemp('caller-qwen3'), answer='<tool_call>', extra_tokens=['<tool_call>'])
    with start_server('--model', str(d), '--dtype', 'float32') as s:
        yield s, str(d)


def test_auto_tool_call_through_responses_and_messages(caller):
    "With `tool_choice` auto the model reasons, then calls; the Responses and Messages APIs return both in their own shapes, full and streamed."
    import json, jsonschema
    from openai import OpenAI
    s, model = caller
    oc, ac = OpenAI(base_url=s.url, api_key='x', max_retries=0), anthropic.Anthropic(base_url=s.root, api_key='x', max_retries=0)
    tools = [{'type': 'function', 'name': 'get_time', 'description': 'Current local time in a city.', 'parameters': CITY}]
    kw = dict(model=model, input='What time is it in Paris?', tools=tools, temperature=0, max_output_tokens=100)
    r = oc.responses.create(**kw)
    assert [o.type for o in r.output] == ['reasoning', 'function_call'] and r.output[0].summary[0].text == 'Hmm'
    call = r.output[1]
    assert call.name == 'get_time' and call.call_id and r.output_text == ''
    jsonschema.validate(json.loads(call.arguments), CITY)
    events = list(oc.responses.create(stream=True, **kw))
    assert ''.join(e.delta for e in events if e.type == 'response.function_call_arguments.delta') == call.arguments
    assert [o.type for o in events[-1].response.output] == ['reasoning', 'function_call']
    off = oc.responses.create(**kw, reasoning={'effort': 'none'})  # thinking off: the call alone
    assert [o.type for o in off.output] == ['function_call'] and off.output[0].arguments == call.arguments

    mkw = dict(model=model, max_tokens=1500, tools=[{'name': 'get_time', 'description': 'Current local time in a city.', 'input_schema': CITY}],
               thinking={'type': 'enabled', 'budget_tokens': 1024}, messages=[{'role': 'user', 'content': 'What time is it in Paris?'}],
               extra_body={'temperature': 0})
    m = ac.messages.create(**mkw)
    assert [b.type for b in m.content] == ['thinking', 'tool_use'] and m.stop_reason == 'tool_use'
    assert m.content[0].thinking == 'Hmm' and m.content[1].name == 'get_time' and m.content[1].input == json.loads(call.arguments)
    with ac.messages.stream(**mkw) as st: final = st.get_final_message()
    assert [b.type for b in final.content] == ['thinking', 'tool_use'] and final.content[1].input == m.content[1].input
