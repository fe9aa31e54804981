"""A tiny Qwen2.5-Omni with random weights, built offline for the tests: the real transformers classes (thinker with its audio
encoder, talker, token2wav DiT and BigVGAN), a small BPE tokenizer trained here with Qwen's special tokens, Whisper's feature
extractor, ChatML, and a speaker file; saved as a folder that `from_pretrained` loads like a downloaded checkpoint."""
from pathlib import Path
import torch

SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|AUDIO|>', '<|audio_bos|>', '<|audio_eos|>', '<|IMAGE|>', '<|VIDEO|>',
           '<|vision_bos|>', '<|vision_eos|>', '<tts_pad>', '<tts_text_bos>', '<tts_text_eod>', '<tts_text_bos_single>']
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% elif p['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ['You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and visual '
          'inputs, as well as generating text and speech.', 'Read this text aloud, exactly as written:',
          'Hello there, how are you today? The quick brown fox jumps over the lazy dog.', 'system user assistant']


def tokenizer():
    "A byte-level BPE tokenizer with Qwen2.5-Omni's special tokens, as `Qwen2TokenizerFast`."
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import Qwen2TokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return Qwen2TokenizerFast(tokenizer_object=tok, eos_token='<|im_end|>', pad_token='<|endoftext|>', extra_special_tokens={
        'audio_token': '<|AUDIO|>', 'image_token': '<|IMAGE|>', 'video_token': '<|VIDEO|>', 'audio_bos_token': '<|audio_bos|>',
        'audio_eos_token': '<|audio_eos|>', 'vision_bos_token': '<|vision_bos|>', 'vision_eos_token': '<|vision_eos|>'})


def build(folder:Path, seed:int=0) -> Path:
    "Save a tiny random Qwen2.5-Omni (weights, processor, speakers) into `folder`."
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, WhisperFeatureExtractor
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    V, H = len(tok), 32
    text = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, max_position_embeddings=4096, rope_parameters={'rope_type': 'default', 'rope_theta': 10000.0,
                                                                           'mrope_section': [2, 3, 3]})
    thinker = dict(text_config=text,
                   audio_config=dict(num_mel_bins=80, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                                     output_dim=H, n_window=50, max_source_positions=1500),
                   vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=H, fullatt_block_indexes=[0]),
                   audio_token_index=ids['<|AUDIO|>'], image_token_index=ids['<|IMAGE|>'], video_token_index=ids['<|VIDEO|>'],
                   audio_start_token_id=ids['<|audio_bos|>'], audio_end_token_id=ids['<|audio_eos|>'],
                   vision_start_token_id=ids['<|vision_bos|>'], vision_end_token_id=ids['<|vision_eos|>'],
                   user_token_id=tok.convert_tokens_to_ids('user') if 'user' in tok.get_vocab() else 0)
    # the talker's vocabulary stops short of generate's end codes (8292, 8294): a random talker then speaks to its length cap,
    # so every run makes the same number of codes (its control codes sit just above the 8192 speech codes)
    talker = dict(vocab_size=8200, tts_codec_pad_token_id=8192, tts_codec_start_token_id=8193, tts_codec_end_token_id=8194,
                  tts_codec_mask_token_id=8196, embedding_size=H, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, max_position_embeddings=8192,
                  rope_parameters={'rope_type': 'default', 'rope_theta': 10000.0, 'mrope_section': [2, 3, 3]},
                  audio_token_index=ids['<|AUDIO|>'], image_token_index=ids['<|IMAGE|>'], video_token_index=ids['<|VIDEO|>'],
                  audio_start_token_id=ids['<|audio_bos|>'], audio_end_token_id=ids['<|audio_eos|>'],
                  vision_start_token_id=ids['<|vision_bos|>'], vision_end_token_id=ids['<|vision_eos|>'],
                  tts_text_start_token_id=ids['<tts_text_bos>'], tts_text_end_token_id=ids['<tts_text_eod>'],
                  tts_text_pad_token_id=ids['<tts_pad>'])
    t2w = dict(dit_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, emb_dim=16, ff_mult=2,
                               enc_emb_dim=16, enc_dim=16, enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8, enc_se_channels=8,
                               look_ahead_layers=[1], look_backward_layers=[0], max_position_embeddings=4096),
               bigvgan_config=dict(upsample_initial_channel=128, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
                                   upsample_rates=[5, 3, 2, 2, 2, 2], upsample_kernel_sizes=[11, 7, 4, 4, 4, 4]))
    cfg = Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=t2w, enable_audio_output=True)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(cfg).eval()
    model.save_pretrained(folder)
    torch.save({'Chelsie': {'cond': torch.randn(1, 16), 'ref_mel': torch.randn(1, 40, 80), 'bos_token': ids['<tts_text_bos_single>']},
                'Ethan': {'cond': torch.randn(1, 16), 'ref_mel': torch.randn(1, 40, 80), 'bos_token': ids['<tts_text_bos_single>']}},
               folder/'spk_dict.pt')
    # the processor's text and audio parts, as a checkpoint holds them (its image and video parts need Pillow and torchvision)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    (folder/'chat_template.jinja').write_text(CHAT_TEMPLATE)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


if __name__ == '__main__':
    import sys; print(build(Path(sys.argv[1])))
