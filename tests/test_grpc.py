"""The gRPC API of a real `hybrie serve` with the bundled model, through a `grpcio` client: every RPC, streaming,
metadata hints and their precedence, errors and their status codes, cancellation and deadlines, health, reflection,
and the same answer as HTTP (through the `openai` SDK) for the same seeded request."""
import asyncio, json
import grpc, httpx, openai, pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hybrie.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
from conftest import start_server, free_port, wait_for

MODEL = 'smollm2-135m-instruct'
Q = [{'role': 'user', 'content': 'Tell me a story about a cat.'}]
LONG = {'max_tokens': 3000, 'ignore_eos': True}  # runs until stopped


@pytest.fixture(scope='module')
def srv(tiny_adapter):
    gport = free_port()
    with start_server('--grpc-port', str(gport), '--adapter', f'tiny={tiny_adapter}', '--max-batch-size', '2', '--max-queue', '2',
                      '--peer', f'dead=http://127.0.0.1:{free_port()}', '--peer-id', 'g', '--peer-secret', 's3') as s:
        s.grpc, s.adapter = f'127.0.0.1:{gport}', tiny_adapter
        yield s


@pytest.fixture
async def stub(srv):
    async with grpc.aio.insecure_channel(srv.grpc) as ch: yield pbg.InferenceStub(ch)


def chat(**kw): return json_format.ParseDict({'model': MODEL, 'messages': Q} | kw, pb.ChatCompletionRequest())
def as_dict(m): return json_format.MessageToDict(m, preserving_proto_field_name=True)
def running(srv): return httpx.get(srv.url + '/node', timeout=10).json()['load']


async def status_of(call):
    try: await call
    except grpc.aio.AioRpcError as e: return e
    raise AssertionError('the call did not fail')


async def test_chat_completion_unary_and_trailing_metadata(stub):
    call = stub.ChatCompletion(chat(temperature=0, max_tokens=12))
    r = await call
    assert r.object == 'chat.completion' and r.id.startswith('chatcmpl-') and r.model == MODEL
    assert r.choices[0].message.role == 'assistant' and r.choices[0].message.content
    assert r.choices[0].finish_reason in ('stop', 'length') and 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert dict(await call.trailing_metadata())['x-hybrie-executed-by'] == 'local'


async def test_chat_completion_stream(stub):
    call = stub.ChatCompletionStream(chat(temperature=0, max_tokens=10, stream_options={'include_usage': True}))
    chunks = [c async for c in call]
    assert dict(await call.initial_metadata())['x-hybrie-executed-by'] == 'local'
    assert dict(await call.trailing_metadata())['x-hybrie-executed-by'] == 'local'
    assert len({c.id for c in chunks}) == 1 and chunks[0].choices[0].delta.role == 'assistant'
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ('stop', 'length') and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


@pytest.mark.parametrize('stream', [False, True])
async def test_same_seeded_answer_as_http(srv, stub, stream):
    "The same seeded request, over gRPC and over HTTP (the openai SDK), gives the same answer, token for token."
    kw = dict(temperature=1.0, seed=1234, top_p=0.95, max_tokens=24)
    oc = openai.AsyncOpenAI(base_url=srv.url, api_key='x', max_retries=0, timeout=300)
    if not stream:
        h = (await oc.chat.completions.create(model=MODEL, messages=Q, **kw)).model_dump(exclude_unset=True)  # the JSON as sent
        g = await stub.ChatCompletion(chat(**kw))
        h = json_format.ParseDict(h | {'id': g.id, 'created': g.created}, pb.ChatCompletionResponse())  # strict: every field has its place
        assert g == h and g.choices[0].message.content
        return
    h = [c async for c in await oc.chat.completions.create(model=MODEL, messages=Q, stream=True, stream_options={'include_usage': True}, **kw)]
    g = [c async for c in stub.ChatCompletionStream(chat(stream_options={'include_usage': True}, **kw))]
    def content(d): return d.content if d.HasField('content') else None
    assert [c.choices[0].delta.content for c in h if c.choices] == [content(c.choices[0].delta) for c in g if c.choices]
    assert [c.choices[0].finish_reason for c in h if c.choices] == [c.choices[0].finish_reason or None for c in g if c.choices]
    assert h[-1].usage.model_dump() == {k: v for k, v in as_dict(g[-1].usage).items()} | {'completion_tokens_details': None, 'prompt_tokens_details': None}


async def test_openai_json_request_parses(stub):
    "A request body written for the HTTP API parses into the request message as it is, and is served."
    body = {'model': MODEL, 'temperature': 0, 'max_tokens': 8, 'stop': ['\n\n', 'THE END'], 'seed': 7, 'n': 2,
            'logit_bias': {'42': -100}, 'logprobs': True, 'top_logprobs': 2, 'thinking_mode': 'auto',
            'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': [{'type': 'text', 'text': 'Hello!'}]},
                         {'role': 'assistant', 'content': 'Hi.'}, {'role': 'user', 'content': 'Name a colour.'}]}
    r = await stub.ChatCompletion(json_format.ParseDict(body, pb.ChatCompletionRequest()))
    assert [c.index for c in r.choices] == [0, 1] and r.choices[0].message.content == r.choices[1].message.content  # greedy
    assert len(r.choices[0].logprobs.content[0].top_logprobs) == 2


async def test_embeddings_models_and_adapters(srv, stub):
    e = await stub.Embeddings(json_format.ParseDict({'model': 'all-minilm-l6-v2', 'input': ['a cat', 'a dog']}, pb.EmbeddingRequest()))
    assert [d.index for d in e.data] == [0, 1] and len(e.data[0].embedding.list_value.values) == 384 and e.usage.prompt_tokens > 0
    body = {'model': 'all-minilm-l6-v2', 'input': [[101, 2023]], 'encoding_format': 'base64'}
    h = (await openai.AsyncOpenAI(base_url=srv.url, api_key='x', max_retries=0).embeddings.create(**body)).model_dump(exclude_unset=True)
    g = await stub.Embeddings(json_format.ParseDict(body, pb.EmbeddingRequest()))
    assert g == json_format.ParseDict(h, pb.EmbeddingList())  # token ids in, base64 vectors out: the same list
    models = {m.id: m for m in (await stub.ListModels(pb.ListModelsRequest())).data}
    assert models['tiny'].parent == MODEL and 'all-minilm-l6-v2' in models
    assert (await stub.GetModel(pb.GetModelRequest(id=MODEL))).context_length == 8192
    assert [a.id for a in (await stub.ListAdapters(pb.ListAdaptersRequest())).data] == ['tiny']
    a = await stub.LoadAdapter(pb.LoadAdapterRequest(id='tiny2', path=srv.adapter))
    assert (a.id, a.base_model, a.rank, list(a.target_modules)) == ('tiny2', MODEL, 8, ['q_proj', 'v_proj']) or a.rank == 8
    assert sorted(x.id for x in (await stub.ListAdapters(pb.ListAdaptersRequest())).data) == ['tiny', 'tiny2']
    assert (await stub.UnloadAdapter(pb.UnloadAdapterRequest(id='tiny2'))).deleted
    e = await status_of(stub.UnloadAdapter(pb.UnloadAdapterRequest(id='tiny2')))
    assert e.code() == grpc.StatusCode.NOT_FOUND


async def test_adapter_metadata_precedence(stub):
    "`x-hybrie-adapter-id` wins over `hybrie.adapter_id` when both are sent; either alone selects the adapter."
    r = await stub.ChatCompletion(chat(max_tokens=2), metadata=(('hybrie.adapter_id', 'tiny'),))
    assert r.model == 'tiny'
    r = await stub.ChatCompletion(chat(max_tokens=2), metadata=(('hybrie.adapter_id', 'nope'), ('x-hybrie-adapter-id', 'tiny')))
    assert r.model == 'tiny'
    e = await status_of(stub.ChatCompletion(chat(max_tokens=2), metadata=(('hybrie.adapter_id', 'tiny'), ('x-hybrie-adapter-id', 'nope'))))
    assert e.code() == grpc.StatusCode.NOT_FOUND and 'nope' in e.details()
    assert json.loads(dict(e.trailing_metadata())['x-hybrie-error'])['error']['code'] == 'adapter_not_found'


async def test_errors_have_the_http_status_and_message(srv, stub):
    async def both(kw, md=()):
        e = await status_of(stub.ChatCompletion(chat(**kw), metadata=md))
        h = httpx.post(srv.url + '/chat/completions', json={'model': MODEL, 'messages': Q} | kw, headers=dict(md), timeout=60)
        assert e.details() == h.json()['error']['message'], (e.details(), h.json())
        assert json.loads(dict(e.trailing_metadata())['x-hybrie-error']) == h.json()
        return e.code(), h.status_code
    assert await both({'temperature': 5}) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert await both({'model': 'no-such-model'}) == (grpc.StatusCode.NOT_FOUND, 404)
    assert await both({}, (('x-hybrie-execution-mode', 'turbo'),)) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert await both({}, (('x-hybrie-preferred-peer-id', 'nobody'),)) == (grpc.StatusCode.NOT_FOUND, 404)
    assert await both({}, (('x-hybrie-preferred-peer-id', 'dead'),)) == (grpc.StatusCode.UNAVAILABLE, 503)
    assert await both({}, (('x-hybrie-forwarded-by', 'x'), ('x-hybrie-peer-token', 'wrong'))) == (grpc.StatusCode.UNAUTHENTICATED, 401)
    e = await status_of(stub.Embeddings(pb.EmbeddingRequest(model='all-minilm-l6-v2')))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, 'Missing required parameter: `input`.')


async def test_full_queue_is_resource_exhausted(srv, stub):
    "With 2 rows decoding and 1 of 2 places in the queue taken (the server's limits), a request for 2 more is RESOURCE_EXHAUSTED."
    calls = []
    try:
        for _ in range(2):
            calls.append(stub.ChatCompletionStream(chat(**LONG)))
            await calls[-1].read()  # decoding
        calls.append(stub.ChatCompletionStream(chat(**LONG)))
        await asyncio.to_thread(wait_for, lambda: running(srv)['queued'] == 1, 120, 0.1, 'a queued request')
        e = await status_of(stub.ChatCompletion(chat(max_tokens=2, n=2)))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and 'retry-after' in dict(e.trailing_metadata())
    finally:
        for c in calls: c.cancel()
    await asyncio.to_thread(wait_for, lambda: running(srv) | {'capacity': 0} == {'running': 0, 'queued': 0, 'capacity': 0}, 120, 0.1, 'an idle engine')


async def test_cancel_stops_generation(srv, stub):
    "A cancelled stream leaves the engine's batch: the engine is idle again long before the 3000 tokens."
    call = stub.ChatCompletionStream(chat(**LONG))
    for _ in range(3): await call.read()
    assert running(srv)['running'] == 1
    call.cancel()
    await asyncio.to_thread(wait_for, lambda: running(srv)['running'] == 0, 60, 0.05, 'the engine dropping the cancelled rows')


async def test_deadline_stops_generation(srv, stub):
    e = await status_of(stub.ChatCompletion(chat(**LONG), timeout=2))
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.to_thread(wait_for, lambda: running(srv)['running'] == 0, 60, 0.05, 'the engine dropping the expired rows')


async def test_health_and_reflection(srv):
    async with grpc.aio.insecure_channel(srv.grpc) as ch:
        hc = health_pb2_grpc.HealthStub(ch)
        for name in ('', 'hybrie.v1.Inference'):
            assert (await hc.Check(health_pb2.HealthCheckRequest(service=name))).status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        async for r in refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services='')])):
            names = {s.name for s in r.list_services_response.service}
            break
        assert {'hybrie.v1.Inference', 'grpc.health.v1.Health'} <= names
        async for r in refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol='hybrie.v1.Inference')])):
            assert r.file_descriptor_response.file_descriptor_proto
            break


def test_busy_grpc_port_is_a_clear_error(srv):
    port = int(srv.grpc.rsplit(':', 1)[1])
    with pytest.raises(RuntimeError, match='gRPC cannot listen on 127.0.0.1:%d' % port):
        with start_server('--grpc-port', str(port), timeout=120): pass
