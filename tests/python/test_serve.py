"""`megatron serve` driven over HTTP (urllib) on CPU: a tiny random Llama (GQA, untied, theta
500000) saved with save_pretrained, with the bundled tokenizer.json. Megatron's PUT /api with
top_k 1 (Megatron's greedy) gives exactly transformers' greedy tokens and text, and its logprobs
(every token after the first: the prompt's, then the generated ones) equal log_softmax of
transformers' logits within 1e-4; tokens_to_generate 0 scores the prompt alone. OpenAI's POST
/v1/completions gives the same continuation with finish_reason, logprobs with the most likely
alternatives, stop strings, echo and usage. Bad JSON, missing or ill-typed fields and
out-of-range values answer 400 with a message naming the field, unknown paths 404, and the server
serves on afterwards; SIGTERM stops it with exit code 0."""
import json
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import REPO
from hf_tiny_models import common

TOKENIZER = REPO / "data" / "kjv_bpe4k_tokenizer.json"
PROMPTS = ["In the beginning God created", "And the earth was"]
NEW = 12
TOL = 1e-4


class Server:
    """A `megatron serve` process on a free port; its stderr is collected by a thread."""

    def __init__(self, build_dir, model_dir, *flags):
        self.proc = subprocess.Popen([str(build_dir / "megatron"), "serve", "--load-hf", str(model_dir), "--device",
                                      "cpu", "--port", "0", *flags], stderr=subprocess.PIPE, text=True)
        self.lines = []
        for line in self.proc.stderr:
            self.lines.append(line)
            if "listening on http://" in line:
                self.url = line.split("listening on ")[1].split()[0]
                break
        else:
            raise AssertionError("megatron serve did not start:\n" + "".join(self.lines))
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def request(self, method, path, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return rc


def tiny_llama(vocab, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(**common(vocab_size=vocab), rope_theta=500000.0, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).float().eval()


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(str(TOKENIZER))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    d = tmp_path_factory.mktemp("serve") / "tiny-llama"
    model = tiny_llama(tok.get_vocab_size())
    model.save_pretrained(d, safe_serialization=True)
    shutil.copy(TOKENIZER, d / "tokenizer.json")
    return model, d


@pytest.fixture(scope="module")
def server(build_dir, model_dir):
    s = Server(build_dir, model_dir[1])
    yield s
    assert s.stop() == 0, "".join(s.lines)


def greedy(model, ids, n=NEW):
    """transformers' greedy continuation (stopping at the model's end-of-sequence id, as ours does)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=n)
    return out[0, len(ids):].tolist()


def log_probs(model, seq):
    """log p(seq[t] | seq[:t]) for t >= 1, from transformers' logits."""
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0]
    lp = torch.log_softmax(logits.double(), dim=-1)
    return [lp[t - 1, seq[t]].item() for t in range(1, len(seq))]


def assert_close(got, want):
    assert len(got) == len(want)
    assert max(abs(a - b) for a, b in zip(got, want)) < TOL, (got, want)


def test_api_greedy_batch_matches_transformers(server, model_dir, tok):
    model, _ = model_dir
    status, r = server.request("PUT", "/api", {"prompts": PROMPTS, "tokens_to_generate": NEW, "top_k": 1,
                                               "logprobs": True})
    assert status == 200, r
    assert set(r) == {"text", "segments", "tokens", "logprobs"}
    for i, prompt in enumerate(PROMPTS):  # a batch of different lengths: each as transformers alone
        ids = tok.encode(prompt).ids
        seq = ids + greedy(model, ids)
        assert r["tokens"][i] == seq
        assert r["text"][i] == tok.decode(seq)
        assert r["segments"][i] == [tok.decode([t]) for t in seq]
        assert_close(r["logprobs"][i], log_probs(model, seq))


def test_api_without_logprobs_and_scoring_only(server, model_dir, tok):
    model, _ = model_dir
    status, r = server.request("PUT", "/api", {"prompts": PROMPTS[:1], "tokens_to_generate": 4, "top_k": 1})
    assert status == 200 and r["logprobs"] is None
    ids = tok.encode(PROMPTS[0]).ids
    assert r["tokens"][0] == ids + greedy(model, ids, 4)
    # tokens_to_generate 0: the prompt scored, nothing generated (Megatron's scoring request).
    status, r = server.request("PUT", "/api", {"prompts": PROMPTS, "tokens_to_generate": 0, "logprobs": True})
    assert status == 200, r
    for i, prompt in enumerate(PROMPTS):
        ids = tok.encode(prompt).ids
        assert r["text"][i] == prompt and r["tokens"][i] == ids
        assert_close(r["logprobs"][i], log_probs(model, ids))


def test_api_sampling_repeats_with_its_seed(server):
    body = {"prompts": PROMPTS, "tokens_to_generate": NEW, "temperature": 1.5, "top_k": 50, "random_seed": 7}
    a = server.request("PUT", "/api", body)
    assert a[0] == 200 and a == server.request("PUT", "/api", body)
    b = server.request("PUT", "/api", {**body, "random_seed": 8})
    assert b[0] == 200 and b[1]["tokens"] != a[1]["tokens"]
    body = {"prompt": PROMPTS, "max_tokens": NEW, "temperature": 1.5, "top_p": 0.9, "seed": 7}
    a = server.request("POST", "/v1/completions", body)[1]["choices"]
    assert a == server.request("POST", "/v1/completions", body)[1]["choices"]
    assert a != server.request("POST", "/v1/completions", {**body, "seed": 8})[1]["choices"]


def completion(tok, ids, new):
    """The text the new tokens add after the prompt."""
    return tok.decode(ids + new)[len(tok.decode(ids)):]


def test_completions_greedy_with_logprobs(server, model_dir, tok):
    model, d = model_dir
    status, r = server.request("POST", "/v1/completions", {"model": "x", "prompt": PROMPTS, "max_tokens": NEW,
                                                           "temperature": 0, "logprobs": 3})
    assert status == 200, r
    assert r["object"] == "text_completion" and r["model"] == d.name and r["id"].startswith("cmpl-")
    assert isinstance(r["created"], int)
    prompt_tokens = completion_tokens = 0
    for i, prompt in enumerate(PROMPTS):
        c = r["choices"][i]
        ids = tok.encode(prompt).ids
        new = greedy(model, ids)
        assert c["index"] == i and c["finish_reason"] == "length" and len(new) == NEW
        assert c["text"] == completion(tok, ids, new)
        lp = c["logprobs"]
        assert lp["tokens"] == [tok.decode([t]) for t in new]
        assert_close(lp["token_logprobs"], log_probs(model, ids + new)[len(ids) - 1:])
        for t, chosen, top in zip(new, lp["token_logprobs"], lp["top_logprobs"]):
            # the chosen token leads (the alternatives' values are computed in double, the chosen one's in fp32)
            assert len(top) == 3 and abs(top[tok.decode([t])] - chosen) < 1e-5
            assert top[tok.decode([t])] == max(top.values())
        assert lp["text_offset"][0] == len(prompt)
        prompt_tokens += len(ids)
        completion_tokens += NEW
    assert r["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}


def test_completions_stop_string_echo_and_token_ids(server, model_dir, tok):
    model, _ = model_dir
    ids = tok.encode(PROMPTS[0]).ids
    text = completion(tok, ids, greedy(model, ids))
    stop = text[len(text) // 2:len(text) // 2 + 3]
    status, r = server.request("POST", "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": NEW, "temperature": 0,
                                                           "stop": [stop]})
    assert status == 200, r
    assert r["choices"][0]["text"] == text[:text.index(stop)] and r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["logprobs"] is None
    # echo: the prompt leads the text and its tokens the logprobs (the first has none).
    status, r = server.request("POST", "/v1/completions", {"prompt": ids, "max_tokens": 0, "echo": True,
                                                           "logprobs": 0})
    assert status == 200, r
    c = r["choices"][0]
    assert c["text"] == PROMPTS[0] and c["logprobs"]["token_logprobs"][0] is None
    assert_close(c["logprobs"]["token_logprobs"][1:], log_probs(model, ids))
    assert c["logprobs"]["top_logprobs"] is None and r["usage"]["completion_tokens"] == 0


def test_completions_end_of_sequence(build_dir, model_dir, tok, tmp_path):
    """A model whose end-of-sequence id comes up in the greedy continuation: finish_reason stop,
    the id's text left out of the completion."""
    model, d = model_dir
    ids = tok.encode(PROMPTS[0]).ids
    new = greedy(model, ids)
    eos = new[4]
    shutil.copytree(d, tmp_path / "eos")
    for name in ("config.json", "generation_config.json"):
        cfg = json.loads((tmp_path / "eos" / name).read_text())
        cfg["eos_token_id"] = eos
        (tmp_path / "eos" / name).write_text(json.dumps(cfg))
    s = Server(build_dir, tmp_path / "eos")
    try:
        status, r = s.request("POST", "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": NEW, "temperature": 0,
                                                          "logprobs": 0})
        upto = new[:new.index(eos)]
        assert status == 200, r
        c = r["choices"][0]
        assert c["finish_reason"] == "stop" and c["text"] == completion(tok, ids, upto)
        assert len(c["logprobs"]["tokens"]) == len(upto) and r["usage"]["completion_tokens"] == len(upto) + 1
        # Megatron's API keeps it.
        status, r = s.request("PUT", "/api", {"prompts": PROMPTS[:1], "tokens_to_generate": NEW, "top_k": 1})
        assert r["tokens"][0] == ids + upto + [eos]
    finally:
        assert s.stop() == 0


BAD_API = [
    (b"{not json", "", "not valid JSON"),
    ({"tokens_to_generate": 4}, "", "prompts argument required"),
    ({"prompts": "hello"}, "", "prompts is not a list of strings"),
    ({"prompts": ["a", 3]}, "", "prompts is not a list of strings"),
    ({"prompts": []}, "", "prompts is empty"),
    ({"prompts": ["a"] * 129}, "", "Maximum number of prompts is 128"),
    ({"prompts": ["a"], "tokens_to_generate": -1}, "", "tokens_to_generate must be an integer greater than or equal"),
    ({"prompts": ["a"], "tokens_to_generate": "5"}, "", "tokens_to_generate must be an integer"),
    ({"prompts": ["a"], "tokens_to_generate": 2.5}, "", "tokens_to_generate must be an integer"),
    ({"prompts": ["a"], "tokens_to_generate": 0}, "", "tokens_to_generate=0 implies logprobs should be True"),
    ({"prompts": ["a"], "logprobs": "yes"}, "", "logprobs must be a boolean value"),
    ({"prompts": ["a"], "temperature": 0}, "", "temperature must be a positive number"),
    ({"prompts": ["a"], "temperature": 101}, "", "temperature must be a positive number"),
    ({"prompts": ["a"], "top_k": 1001}, "", "top_k must be an integer"),
    ({"prompts": ["a"], "top_k": 5, "top_p": 0.5}, "", "cannot set both top-k and top-p"),
    ({"prompts": ["a"], "top_p": 1.5}, "", "top_p must be"),
    ({"prompts": [""]}, "", "Empty prompts require add_BOS=true"),
    ({"prompts": ["a"], "random_seed": -3}, "", "random_seed must be"),
    ({"prompts": ["a"], "beam_width": 2}, "", "beam_width"),
    ({"prompts": ["a"], "max_len": 4}, "", "max_len is no longer used"),
    ({"prompts": ["a"], "tokens_to_generate": 64}, "", "longer than allowed"),
    ([1, 2], "", "must be a JSON object"),
]


@pytest.mark.parametrize("body,_,needle", BAD_API, ids=[n for _, _, n in BAD_API])
def test_api_bad_requests_answer_400(server, body, _, needle):
    status, r = server.request("PUT", "/api", body)
    assert status == 400 and needle in r["message"], r


BAD_COMPLETIONS = [
    (b"[1,", None, "not valid JSON"),
    ({"max_tokens": 4}, "prompt", "prompt is required"),
    ({"prompt": 5}, "prompt", "prompt must be a string"),
    ({"prompt": []}, "prompt", "prompt contains no items"),
    ({"prompt": [[1, 2], "x", 3]}, "prompt", "prompt must be a string"),
    ({"prompt": [1, -2]}, "prompt", "not a vocabulary id"),
    ({"prompt": [1, 99999]}, "prompt", "outside the vocabulary"),
    ({"prompt": "a", "max_tokens": -3}, "max_tokens", "max_tokens must be an integer >= 0"),
    ({"prompt": "a", "max_tokens": "3"}, "max_tokens", "max_tokens must be an integer >= 0"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens", "needs echo"),
    ({"prompt": "a", "max_tokens": 1000}, "prompt", "longer than allowed"),
    ({"prompt": "a", "temperature": -1}, "temperature", "temperature must be"),
    ({"prompt": "a", "top_p": 0}, "top_p", "top_p must be"),
    ({"prompt": "a", "logprobs": 50}, "logprobs", "logprobs must be an integer from 0 to 20"),
    ({"prompt": "a", "logprobs": True}, "logprobs", "logprobs must be an integer"),
    ({"prompt": "a", "stop": 3}, "stop", "stop must be a string or a list of strings"),
    ({"prompt": "a", "seed": "x"}, "seed", "seed must be"),
    ({"prompt": "a", "n": 2}, "n", "n must be 1"),
    ({"prompt": "a", "stream": True}, "stream", "stream=true is not supported"),
    ({"prompt": "a", "echo": 1}, "echo", "echo must be a boolean"),
]


@pytest.mark.parametrize("body,field,needle", BAD_COMPLETIONS, ids=[n for _, _, n in BAD_COMPLETIONS])
def test_completions_bad_requests_answer_400(server, body, field, needle):
    status, r = server.request("POST", "/v1/completions", body)
    assert status == 400, r
    e = r["error"]
    assert needle in e["message"] and e["param"] == field and e["type"] == "invalid_request_error", e


def test_unknown_paths_and_methods(server):
    status, r = server.request("POST", "/v2/nothing", {})
    assert status == 404 and "not found" in r["message"]
    status, r = server.request("GET", "/api", None)
    assert status == 405 and "use PUT" in r["message"]
    status, r = server.request("GET", "/v1/models", None)
    assert status == 200 and r["data"][0]["id"] == "tiny-llama"


def test_serves_on_after_bad_requests_and_one_at_a_time(server, model_dir, tok):
    model, _ = model_dir
    assert server.request("PUT", "/api", b"\x00garbage")[0] == 400
    assert server.request("PUT", "/api", b'{"prompts": ["\xff\xfe"]}')[0] == 400  # not UTF-8
    assert server.request("POST", "/v1/completions", b"\xff\xfe")[0] == 400
    assert server.request("PUT", "/api", {"prompts": [None]})[0] == 400
    results = [None] * 4

    def ask(k):
        results[k] = server.request("PUT", "/api", {"prompts": PROMPTS[k % 2:k % 2 + 1], "tokens_to_generate": NEW,
                                                    "top_k": 1})

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, (status, r) in enumerate(results):  # concurrent requests, each answered as if alone
        ids = tok.encode(PROMPTS[k % 2]).ids
        assert status == 200 and r["tokens"][0] == ids + greedy(model, ids)


def test_sigint_stops_it_too(build_dir, model_dir):
    s = Server(build_dir, model_dir[1], "--served-model-name", "mine")
    assert s.request("GET", "/v1/models", None)[1]["data"][0]["id"] == "mine"
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=60) == 0
    s.reader.join(timeout=10)
    assert "> serve: stopped" in s.lines[-1]


def test_cli_errors(build_dir, model_dir):
    exe = str(build_dir / "megatron")
    r = subprocess.run([exe, "serve", "--device", "cpu"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "give one of --load DIR or --load-hf DIR" in r.stderr
    r = subprocess.run([exe, "serve", "--load-hf", str(model_dir[1]), "--port", "70000"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--port 70000" in r.stderr
