"""Our tokenizers give the same ids as the real ones: Hugging Face `tokenizers` for GPT-2-style
and Llama-3-style tokenizer.json files (trained here with the tokenizers package) and GPT-2's
vocab.json + merges.txt, and `sentencepiece` for .model files; decode(encode(x)) == x.

The C++ side is driven through build*/tests/tokenizer_probe (skipped when not built).
"""
import glob
import json
import os
import subprocess

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Texts that trip tokenizers up. Invalid UTF-8 is given as bytes; both sides see it as
# bytes.decode("utf-8", "replace").
NASTY = [
    "Hello world",
    "  leading and trailing spaces   ",
    "tabs\tand\t\tnewlines\n\n\nand\r\nwindows line ends \n \n",
    "                    a long run of spaces",
    "I'm sure you're right, they've said it'll be what we'd do. DON'T SHOUT. It'S mixed",
    "digits 1 12 123 1234 12345 3.14159 1,000,000 0x1F",
    "CJK: 日本語のテキスト、中文文本，한국어 텍스트。",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and ❤️",
    "combining marks: e\u0301 a\u0308 n\u0303 Z\u0351\u0359\u0364\u036b and precomposed é ä ñ",
    "Ελληνικά, русский текст, עברית, العربية, हिन्दी",
    "punctuation!!! ??? ... --- *** ((( ))) {{{ }}} <<< >>> @@@ ### $$$ %%% ^^^ &&&",
    "mixed123abc___def---ghi...jkl",
    "\u00a0non-breaking\u2003em space\u3000ideographic space\u200bzero width",
    "",
    " ",
    "\n",
    "special <|endoftext|> in the middle<|endoftext|>and glued<|endoftext|>",
    "<|endoftext|>",
    b"invalid \xff\xfe bytes \xc3( and truncated \xe2\x82 end \xf0\x9f\x98",
    b"overlong \xc0\xaf surrogate \xed\xa0\x80 and past max \xf4\x90\x80\x80 lone \x80\xbf",
]


def training_corpus():
    text = open(os.path.join(ROOT, "data", "README.md"), encoding="utf-8").read()
    extra = [t if isinstance(t, str) else t.decode("utf-8", "replace") for t in NASTY]
    return [text] * 3 + extra * 5


def probe_exe():
    exe = os.environ.get("MT_TOKENIZER_PROBE")
    if exe:
        return exe
    found = sorted(glob.glob(os.path.join(ROOT, "build*", "tests", "tokenizer_probe")), key=os.path.getmtime)
    if not found:
        pytest.skip("tokenizer_probe is not built (cmake --build BUILD --target tokenizer_probe)")
    return found[-1]


def run_probe(tmp_path, flags, texts):
    data = b""
    for t in texts:
        b = t.encode("utf-8") if isinstance(t, str) else t
        data += str(len(b)).encode() + b"\n" + b
    inp = tmp_path / "texts.bin"
    inp.write_bytes(data)
    r = subprocess.run([probe_exe(), *flags, "--input", str(inp)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().strip("\n").split("\n")
    info = [int(x) for x in lines[0].split()[1:]]
    ids, decoded = [], []
    for k in range(len(texts)):
        ids.append([int(x) for x in lines[1 + 2 * k][4:].split()])
        decoded.append(bytes.fromhex(lines[2 + 2 * k][9:]))
    return info, ids, decoded


def as_str(t):
    return t if isinstance(t, str) else t.decode("utf-8", "replace")


def train_bpe(pre_tokenizer, ignore_merges=False, vocab_size=700):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer)
    return tok


@pytest.fixture(scope="module")
def gpt2_style():
    return train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))


@pytest.fixture(scope="module")
def llama3_style():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return train_bpe(pre, ignore_merges=True)


def check_hf(tmp_path, tok, path, texts=NASTY, exact_round_trip=True):
    info, ids, decoded = run_probe(tmp_path, ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(path)],
                                   texts)
    assert info[0] == tok.get_vocab_size(with_added_tokens=True)
    assert info[1] == tok.token_to_id("<|endoftext|>")
    for t, got, dec in zip(texts, ids, decoded):
        want = tok.encode(as_str(t), add_special_tokens=False).ids
        assert got == want, f"text {as_str(t)!r}"
        if exact_round_trip:
            assert dec == as_str(t).encode("utf-8"), f"round trip of {as_str(t)!r}"
        else:
            assert dec == tok.decode(want, skip_special_tokens=False).encode("utf-8")


def test_gpt2_style_tokenizer_json_matches_hf(tmp_path, gpt2_style):
    path = tmp_path / "tokenizer.json"
    gpt2_style.save(str(path))
    assert json.load(open(path))["model"]["merges"][0].__class__ is list  # the ["a", "b"] form
    check_hf(tmp_path, gpt2_style, path)


def test_llama3_style_split_regex_and_ignore_merges_match_hf(tmp_path, llama3_style):
    path = tmp_path / "tokenizer.json"
    llama3_style.save(str(path))
    cfg = json.load(open(path))
    assert cfg["model"]["ignore_merges"] is True
    check_hf(tmp_path, llama3_style, path)


def test_merges_written_as_a_space_b_strings_load_the_same(tmp_path, gpt2_style):
    cfg = json.loads(gpt2_style.to_str())
    cfg["model"]["merges"] = [" ".join(m) for m in cfg["model"]["merges"]]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(cfg))
    check_hf(tmp_path, Tokenizer.from_file(str(path)), path)


def test_add_prefix_space_matches_hf(tmp_path):
    tok = train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=True), vocab_size=400)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    check_hf(tmp_path, tok, path, exact_round_trip=False)  # decoding keeps the added space


def test_long_repeated_word_matches_hf(tmp_path, gpt2_style):
    path = tmp_path / "tokenizer.json"
    gpt2_style.save(str(path))
    texts = ["a" * 5000, "ab" * 3000 + " " + "the " * 2000, "9" * 4000]
    check_hf(tmp_path, gpt2_style, path, texts)


def test_gpt2_vocab_and_merges_files_match_hf(tmp_path, gpt2_style):
    gpt2_style.model.save(str(tmp_path))  # vocab.json + merges.txt
    texts = [t for t in NASTY if b"<|endoftext|>" not in (t if isinstance(t, bytes) else t.encode())]
    info, ids, decoded = run_probe(tmp_path, ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file",
                                              str(tmp_path / "vocab.json"), "--merge-file", str(tmp_path / "merges.txt")],
                                   texts)
    assert info[1] == gpt2_style.token_to_id("<|endoftext|>")
    for t, got, dec in zip(texts, ids, decoded):
        assert got == gpt2_style.encode(as_str(t)).ids
        assert dec == as_str(t).encode("utf-8")


def test_bad_merge_is_one_clear_error(tmp_path, gpt2_style):
    cfg = json.loads(gpt2_style.to_str())
    cfg["model"]["merges"].append(["zzqq", "xx"])
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([probe_exe(), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert "\n" not in err and "merge" in err and "zzqq" in err and str(path) in err


@pytest.mark.parametrize("broken", ['{"model": ', '[]', '{"model": {"type": "WordPiece"}}',
                                    '{"model": {"vocab": {"a": "x"}, "merges": []}}',
                                    '{"model": {"vocab": {"a": 0}, "merges": ["a"]}, "pre_tokenizer": {"type": "ByteLevel"}}',
                                    # a sparse id far past the tokens defined (the fuzzer's out-of-memory input)
                                    '{"model": {"vocab": {"a": 0, "b": 100000000}, "merges": []}, '
                                    '"pre_tokenizer": {"type": "ByteLevel"}}'])
def test_malformed_tokenizer_json_is_one_clear_error(tmp_path, broken):
    path = tmp_path / "tokenizer.json"
    path.write_text(broken)
    r = subprocess.run([probe_exe(), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and str(path) in r.stderr


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    d = tmp_path_factory.mktemp("sp")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(as_str(t) for t in training_corpus()).replace("\r", ""), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(d / "m"), vocab_size=400,
                                   character_coverage=1.0, model_type="bpe", minloglevel=2)
    return spm.SentencePieceProcessor(model_file=str(d / "m.model")), str(d / "m.model")


def test_gpt_sentencepiece_matches_sentencepiece(tmp_path, sp_model):
    sp, path = sp_model
    texts = [t for t in NASTY if t]
    info, ids, decoded = run_probe(tmp_path, ["--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", path],
                                   texts)
    assert info[:2] == [sp.get_piece_size(), sp.eos_id()]
    for t, got, dec in zip(texts, ids, decoded):
        assert got == sp.encode(as_str(t)), f"text {as_str(t)!r}"
        assert dec.decode("utf-8") == sp.decode(got)


def test_megatron_sentencepiece_matches_special_tokens_like_megatron(tmp_path, sp_model):
    sp, path = sp_model
    # Megatron's _SentencePieceTokenizer appends <CLS> <SEP> <EOD> <MASK> <PAD> after the model's
    # pieces (bos/eos are the model's <s> </s>) and cuts special tokens out of the text first.
    n = sp.get_piece_size()
    special = {"<CLS>": n, "<SEP>": n + 1, "<EOD>": n + 2, "<MASK>": n + 3, "<PAD>": n + 4, "<s>": sp.bos_id(),
               "</s>": sp.eos_id()}

    def megatron_tokenize(text):
        ids, idx = [], 0
        while True:
            found = {t: text.find(t, idx) for t in special if text.find(t, idx) >= 0}
            if not found:
                break
            tok = min(found, key=found.get)
            ids += sp.encode(text[idx:found[tok]])
            ids.append(special[tok])
            idx = found[tok] + len(tok)
        return ids + sp.encode(text[idx:])

    texts = ["a<EOD>b", "<CLS>x<SEP>y<MASK><PAD>z</s><s>", "plain text", "two <EOD><EOD> in a row"]
    info, ids, _ = run_probe(tmp_path, ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", path], texts)
    assert info[0] == n + 5 and info[1] == n + 2
    for t, got in zip(texts, ids):
        assert got == megatron_tokenize(t)


def test_null_tokenizer_reads_ids_and_eod_is_vocab_size(tmp_path):
    info, ids, decoded = run_probe(tmp_path, ["--tokenizer-type", "NullTokenizer", "--vocab-size", "100"],
                                   ["1 2 3", "99  0\n7", ""])
    assert info[:2] == [101, 100]
    assert ids == [[1, 2, 3], [99, 0, 7], []]
    assert decoded[0] == b"1 2 3"
