"""Tiny Qwen3 models for the tests: the real Qwen3 architecture and chat template, with weights small enough to build here.

No Qwen3 weights can be downloaded here. Both models use the bundled SmolLM2 tokenizer (a byte-level BPE with ChatML tokens)
with `<think>`/`</think>` (and any extra tokens) added, and the published Qwen3 chat template from `fixtures/`.

- `chain_qwen3`: weights set by hand to follow a fixed chain of tokens. Attention and MLP outputs are zero, so each
  position's hidden state is its own token's embedding, and the LM head maps the embedding of each token of the chain to
  the next one. After the generation prompt (`...assistant\\n`) the model says `<think>{think}</think>{answer}<|im_end|>`;
  with thinking off the template itself closes an empty think block (`...</think>\\n\\n`), after which the model says
  `{answer}<|im_end|>`. With `fim=True` the tokenizer also has Qwen's fill-in-the-middle tokens, and after
  `<|fim_middle|>` the model says `{answer}` too. Any other token is followed by `<|im_end|>`, so under a grammar that forbids ending, every allowed
  token scores the same and greedy decoding takes the lowest allowed id: still deterministic.
- `random_qwen3`: seeded random weights (transformers' own initialisation): fluent in nothing, so what it writes under a
  grammar is decided by the grammar alone.
"""
from pathlib import Path
import torch

FIXTURES = Path(__file__).parent/'fixtures'


FIM_TOKENS = ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>']

def qwen3_tokenizer(extra_tokens=(), template:str='qwen3_chat_template.jinja', special_tokens=()):
    "The bundled SmolLM2 tokenizer with Qwen3's think tokens (and `extra_tokens`) added, and the real Qwen3 template (or another from `fixtures/`)."
    from transformers import AutoTokenizer
    from hybrie.config import Catalog
    res = Catalog().resolve('smollm2-135m-instruct')
    tok = AutoTokenizer.from_pretrained(res.path, gguf_file=res.gguf_file)
    tok.add_tokens(['<think>', '</think>', *extra_tokens])
    if special_tokens: tok.add_special_tokens({'additional_special_tokens': list(special_tokens)})
    tok.chat_template = (FIXTURES/template).read_text()
    return tok


def _config(tok, eos:int, H:int=64):
    from transformers import Qwen3Config
    return Qwen3Config(vocab_size=len(tok), hidden_size=H, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, tie_word_embeddings=False,
                       eos_token_id=eos, bos_token_id=None, pad_token_id=eos)


def _save(m, tok, d:Path, eos:int) -> Path:
    from transformers import GenerationConfig
    m.save_pretrained(d); tok.save_pretrained(d)
    GenerationConfig(eos_token_id=eos, pad_token_id=eos).save_pretrained(d)
    return d


def chain_qwen3(d:Path, think:str|None='Hmm', answer:str='Paris', extra_tokens=(), template:str='qwen3_chat_template.jinja',
                fim:bool=False) -> Path:
    "A tiny Qwen3 in folder `d` that says `<think>{think}</think>{answer}` (or `{answer}` with thinking off, or `think=None`)."
    from transformers import Qwen3ForCausalLM
    tok = qwen3_tokenizer(extra_tokens, template, FIM_TOKENS if fim else ())
    ids = lambda s: tok.encode(s, add_special_tokens=False)
    nl, nlnl = ids('\n'), ids('\n\n')
    assert len(nl) == 1 and len(nlnl) == 1
    eos = tok.convert_tokens_to_ids('<|im_end|>')
    chain = [nl[0], *(ids('<think>') + ids(think) + ids('</think>') if think is not None else []), *ids(answer), eos]
    assert len(set(chain)) == len(chain), 'each token of the chain must be distinct'
    H = 64
    torch.manual_seed(0)
    m = Qwen3ForCausalLM(_config(tok, eos, H))
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
        head[ids(answer)[0], len(chain)] = 10.0
        if fim:                                                          # fill-in-the-middle: the middle is the answer
            mid = tok.convert_tokens_to_ids('<|fim_middle|>')
            emb[mid].zero_(); emb[mid, len(chain) + 1] = 1.0
            head[ids(answer)[0], len(chain) + 1] = 10.0
        head[eos, H - 1] = 10.0                                        # anything else: end the answer
    return _save(m, tok, d, eos)


def random_qwen3(d:Path, seed:int=0) -> Path:
    "A tiny Qwen3 in folder `d` with seeded random weights."
    from transformers import Qwen3ForCausalLM
    tok = qwen3_tokenizer()
    eos = tok.convert_tokens_to_ids('<|im_end|>')
    torch.manual_seed(seed)
    return _save(Qwen3ForCausalLM(_config(tok, eos)), tok, d, eos)
