#include "data/preprocess.h"

#include <zlib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/error.h"
#include "data/indexed_dataset.h"

namespace mt {
namespace {

using Clock = std::chrono::steady_clock;

// A run of whole lines of the input.
struct Chunk {
  int64_t seq = 0;
  int64_t first_line = 0;  // 1-based number of the chunk's first line
  std::string text;
};

// What a worker made of a chunk: per JSON key, the tokens of its documents back to back, the
// lengths of their sequences, and how many sequences each document has.
struct Tokenized {
  struct Key {
    std::vector<int32_t> tokens, seq_lengths, doc_sequences;
  };
  int64_t seq = 0, documents = 0, bad_lines = 0, tokens = 0, bytes = 0;
  std::vector<Key> keys;
  std::vector<std::string> warnings;
  std::string error;  // the chunk's first bad line (without --skip-bad-lines): raised when written
};

// Reads lines in chunks of about kChunkBytes from plain or gzip input (zlib reads both).
class LineReader {
 public:
  static constexpr size_t kChunkBytes = 1 << 20;
  explicit LineReader(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) MT_USER_ERROR("--input {}: cannot open: {}", path, std::strerror(errno));
    gzbuffer(file_, 1 << 20);
  }
  ~LineReader() {
    if (file_) gzclose(file_);
  }
  // The next chunk of whole lines; false at the end.
  bool next(Chunk& c) {
    c.text = std::move(carry_);
    carry_.clear();
    c.first_line = line_;
    while (!eof_) {
      size_t have = c.text.size();
      c.text.resize(have + kChunkBytes);
      int n = gzread(file_, c.text.data() + have, unsigned(kChunkBytes));
      if (n < 0) {
        int err = 0;
        const char* msg = gzerror(file_, &err);
        MT_USER_ERROR("--input {}: read error: {}", path_, msg ? msg : "unknown");
      }
      c.text.resize(have + size_t(n));
      if (n == 0) eof_ = true;
      size_t nl = c.text.rfind('\n');
      if (nl != std::string::npos && nl >= have) {  // whole lines so far; keep the tail for the next chunk
        carry_.assign(c.text, nl + 1);
        c.text.resize(nl + 1);
        break;
      }
      if (c.text.size() > (size_t(1) << 31))
        MT_USER_ERROR("--input {}: line {} is longer than 2 GB", path_, line_);
    }
    if (c.text.empty()) return false;
    line_ += int64_t(std::count(c.text.begin(), c.text.end(), '\n')) + (c.text.back() == '\n' ? 0 : 1);
    return true;
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
  std::string carry_;
  int64_t line_ = 1;
  bool eof_ = false;
};

// Tokenizes one chunk; throws UserError for a bad line unless skip_bad_lines.
Tokenized tokenize_chunk(const Chunk& c, const PreprocessOptions& o, const Tokenizer& tok) {
  Tokenized r;
  r.seq = c.seq;
  r.keys.resize(o.json_keys.size());
  r.bytes = int64_t(c.text.size());
  int64_t line_no = c.first_line;
  size_t pos = 0;
  std::vector<std::string_view> texts;
  while (pos < c.text.size()) {
    size_t nl = c.text.find('\n', pos);
    if (nl == std::string::npos) nl = c.text.size();
    std::string_view line(c.text.data() + pos, nl - pos);
    const int64_t this_line = line_no++;
    pos = nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
    auto bad = [&](const std::string& why) {
      std::string msg = fmt::format("{}:{}: {}", o.input, this_line, why);
      if (!o.skip_bad_lines) {
        if (r.error.empty()) r.error = msg + " (use --skip-bad-lines to leave such lines out)";
        return;
      }
      ++r.bad_lines;
      if (r.warnings.size() < 5) r.warnings.push_back(msg);
    };
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      bad(j.is_discarded() ? "not valid JSON" : "not a JSON object");
      if (!r.error.empty()) return r;
      continue;
    }
    // Check every key before tokenizing any, so a bad line leaves no partial document.
    bool ok = true;
    for (const auto& key : o.json_keys) {
      auto it = j.find(key);
      if (it == j.end()) {
        bad(fmt::format("no key \"{}\"", key));
        ok = false;
        break;
      }
      bool good = it->is_string();
      if (it->is_array()) good = std::all_of(it->begin(), it->end(), [](const auto& x) { return x.is_string(); });
      if (!good) {
        bad(fmt::format("\"{}\" is not a string or a list of strings", key));
        ok = false;
        break;
      }
    }
    if (!r.error.empty()) return r;
    if (!ok) continue;
    for (size_t k = 0; k < o.json_keys.size(); ++k) {
      const nlohmann::json& v = j[o.json_keys[k]];
      Tokenized::Key& out = r.keys[k];
      const size_t doc_start = out.tokens.size();
      int32_t nseq = 0;
      auto add_sentence = [&](const std::string& s) {
        const size_t before = out.tokens.size();
        tok.encode(s, out.tokens);
        if (out.tokens.size() > before) {
          out.seq_lengths.push_back(int32_t(out.tokens.size() - before));
          ++nseq;
        }
      };
      if (v.is_string()) add_sentence(v.get_ref<const std::string&>());
      else
        for (const auto& s : v) add_sentence(s.get_ref<const std::string&>());
      if (o.append_eod && out.tokens.size() > doc_start) {
        out.tokens.push_back(tok.eod());
        ++out.seq_lengths.back();
      }
      out.doc_sequences.push_back(nseq);
      r.tokens += int64_t(out.tokens.size() - doc_start);
    }
    ++r.documents;
  }
  return r;
}

// The pipeline's shared state: a bounded queue of chunks for the workers and the finished
// results, which the writer takes in input order.
struct Pipeline {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Chunk> todo;
  std::map<int64_t, Tokenized> done;
  int64_t next_to_write = 0, chunks_read = 0;
  bool input_done = false;
  std::exception_ptr error;
  size_t max_in_flight = 4;
};

}  // namespace

std::string preprocess_output_prefix(const std::string& output_prefix, const std::string& key) {
  return output_prefix + "_" + key + "_document";
}

PreprocessStats preprocess_data(const PreprocessOptions& o) {
  if (o.input.empty()) MT_USER_ERROR("--input is required (a .jsonl or .jsonl.gz file)");
  if (o.output_prefix.empty()) MT_USER_ERROR("--output-prefix is required");
  if (o.json_keys.empty()) MT_USER_ERROR("--json-keys needs at least one key");
  for (size_t i = 0; i < o.json_keys.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      if (o.json_keys[i] == o.json_keys[k])
        MT_USER_ERROR("--json-keys: \"{}\" is given twice (each key writes its own {})", o.json_keys[i],
                      preprocess_output_prefix(o.output_prefix, o.json_keys[i]) + ".bin/.idx");
  if (o.workers < 1) MT_USER_ERROR("--workers must be at least 1, got {}", o.workers);
  auto tok = build_tokenizer(o.tokenizer);
  if (o.append_eod && tok->eod() < 0)
    MT_USER_ERROR("--append-eod: {} has no end-of-document token", tok->name());
  LineReader reader(o.input);
  std::vector<std::unique_ptr<IndexedDatasetWriter>> writers;
  for (const auto& key : o.json_keys)
    writers.push_back(std::make_unique<IndexedDatasetWriter>(preprocess_output_prefix(o.output_prefix, key), tok->vocab_size()));

  PreprocessStats st;
  const auto t0 = Clock::now();
  auto last_log = t0;
  Pipeline p;
  p.max_in_flight = size_t(4 * o.workers);
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(p.mu);
    if (!p.error) p.error = e;
    p.cv.notify_all();
  };

  std::thread read_thread([&] {
    try {
      for (int64_t seq = 0;; ++seq) {
        Chunk c;
        c.seq = seq;
        bool more = reader.next(c);
        std::unique_lock<std::mutex> lock(p.mu);
        if (!more || p.error) break;
        // Bounded memory: wait until the writer has caught up.
        p.cv.wait(lock, [&] { return p.error || p.chunks_read - p.next_to_write < int64_t(p.max_in_flight); });
        if (p.error) break;
        p.todo.push_back(std::move(c));
        ++p.chunks_read;
        p.cv.notify_all();
      }
    } catch (...) {
      fail(std::current_exception());
    }
    std::lock_guard<std::mutex> lock(p.mu);
    p.input_done = true;
    p.cv.notify_all();
  });

  std::vector<std::thread> workers;
  for (int w = 0; w < o.workers; ++w) {
    workers.emplace_back([&] {
      try {
        while (true) {
          Chunk c;
          {
            std::unique_lock<std::mutex> lock(p.mu);
            p.cv.wait(lock, [&] { return p.error || !p.todo.empty() || p.input_done; });
            if (p.error || p.todo.empty()) return;
            c = std::move(p.todo.front());
            p.todo.pop_front();
          }
          Tokenized t = tokenize_chunk(c, o, *tok);
          std::lock_guard<std::mutex> lock(p.mu);
          p.done.emplace(t.seq, std::move(t));
          p.cv.notify_all();
        }
      } catch (...) {
        fail(std::current_exception());
      }
    });
  }

  auto join_all = [&] {
    read_thread.join();
    for (auto& w : workers) w.join();
  };
  try {
    while (true) {
      std::optional<Tokenized> t;
      {
        std::unique_lock<std::mutex> lock(p.mu);
        p.cv.wait(lock, [&] {
          return p.error || p.done.count(p.next_to_write) || (p.input_done && p.next_to_write == p.chunks_read);
        });
        if (p.error) break;
        auto it = p.done.find(p.next_to_write);
        if (it == p.done.end()) break;  // everything written
        t = std::move(it->second);
        p.done.erase(it);
      }
      // Errors surface in input order: the first bad line of the file is the one reported.
      if (!t->error.empty()) throw UserError(t->error);
      for (size_t k = 0; k < writers.size(); ++k) {
        const auto& key = t->keys[k];
        size_t tok_pos = 0, seq_pos = 0;
        for (int32_t nseq : key.doc_sequences) {
          std::span<const int32_t> lens(key.seq_lengths.data() + seq_pos, size_t(nseq));
          int64_t n = 0;
          for (int32_t l : lens) n += l;
          writers[k]->add_document(std::span<const int32_t>(key.tokens.data() + tok_pos, size_t(n)), lens);
          tok_pos += size_t(n);
          seq_pos += size_t(nseq);
        }
      }
      for (const auto& w : t->warnings) std::fprintf(stderr, "preprocess: warning: %s (line left out)\n", w.c_str());
      st.documents += t->documents;
      st.tokens += t->tokens;
      st.bad_lines += t->bad_lines;
      st.input_bytes += t->bytes;
      {
        std::lock_guard<std::mutex> lock(p.mu);
        ++p.next_to_write;
        p.cv.notify_all();
      }
      const auto now = Clock::now();
      const double secs = std::chrono::duration<double>(now - t0).count();
      if (o.log_interval_s > 0 && std::chrono::duration<double>(now - last_log).count() >= o.log_interval_s) {
        last_log = now;
        std::fprintf(stderr, "preprocess: %lld documents, %.1f MB | %.0f docs/s, %.2f MB/s\n", (long long)st.documents,
                     double(st.input_bytes) / 1e6, double(st.documents) / secs, double(st.input_bytes) / 1e6 / secs);
      }
    }
  } catch (...) {
    fail(std::current_exception());
  }
  join_all();
  if (p.error) std::rethrow_exception(p.error);
  for (auto& w : writers) w->finalize();
  st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return st;
}

void merge_datasets(const std::vector<std::string>& inputs, const std::string& output_prefix) {
  if (inputs.empty()) MT_USER_ERROR("--input needs at least one dataset prefix");
  if (output_prefix.empty()) MT_USER_ERROR("--output-prefix is required");
  std::unique_ptr<IndexedDatasetWriter> out;
  for (const auto& prefix : inputs) {
    IndexedDataset ds(prefix);
    if (!out) out = std::make_unique<IndexedDatasetWriter>(output_prefix, ds.dtype());
    out->add_index(ds);
  }
  out->finalize();
}

}  // namespace mt
