// Native distributed checkpoints: what one layout saves, any other layout loads bit for bit;
// a save that did not finish is skipped; corruption is an error that names the file and tensor;
// old iterations go only after a newer one is complete; a SIGKILL mid-save loses nothing but
// the partial iteration.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <barrier>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/half.h"

namespace fs = std::filesystem;
using namespace mt;

namespace {

// The "model": three global tensors as a GPT layer would split them under tensor parallelism.
struct GlobalTensor {
  std::string name;
  Shape shape;
  int tp_dim;  // -1: replicated over tp
};
const std::vector<GlobalTensor> kModel = {
    {"decoder.layers.0.mlp.linear_fc1.weight", {8, 6}, 0},  // column parallel: rows split
    {"decoder.layers.0.mlp.linear_fc2.weight", {6, 8}, 1},  // row parallel: columns split
    {"decoder.layers.0.mlp.linear_fc2.bias", {6}, -1},      // replicated
    {"embedding.word_embeddings.weight", {16, 6}, 0},       // vocab parallel
};

// The value of element g of tensor `name` (exact in bf16).
float value(const std::string& name, int64_t g, int salt) {
  uint64_t h = 1469598103934665603ull ^ uint64_t(salt);
  for (char c : name) h = (h ^ uint8_t(c)) * 1099511628211ull;
  h = (h ^ uint64_t(g)) * 0x9E3779B97F4A7C15ull;
  return float(int((h >> 40) % 255) - 127) / 8.0f;
}

struct RankLayout {
  std::vector<FlatTensorLayout> tensors;
  int64_t numel = 0;  // padded to a multiple of 4 * dp
};

RankLayout layout_for(int tp, int tp_rank, int dp) {
  RankLayout r;
  for (const GlobalTensor& g : kModel) {
    FlatTensorLayout l;
    l.name = g.name;
    l.global_shape = g.shape;
    l.local_shape = g.shape;
    if (g.tp_dim >= 0) {
      l.shard_dim = g.tp_dim;
      l.local_shape[size_t(g.tp_dim)] /= tp;
      l.shard_start = l.local_shape[size_t(g.tp_dim)] * tp_rank;
    }
    l.offset = r.numel;
    r.numel += (shape_numel(l.local_shape) + 3) / 4 * 4;  // alignment padding
    r.tensors.push_back(l);
  }
  r.numel = (r.numel + 4 * dp - 1) / (4 * dp) * (4 * dp);
  return r;
}

// A rank's flat buffer holding the expected values (salt 0: weights, 1: exp_avg, ...).
Tensor filled_buffer(const RankLayout& r, DType dt, int salt) {
  Tensor t = Tensor::zeros({r.numel}, dt);
  for (const FlatTensorLayout& l : r.tensors) {
    const int64_t n = shape_numel(l.local_shape);
    for (int64_t i = 0; i < n; ++i) {
      // local multi-index -> global flat index
      int64_t rem = i, g = 0, stride = 1;
      Shape idx(l.local_shape.size());
      for (size_t d = l.local_shape.size(); d-- > 0;) {
        idx[d] = rem % l.local_shape[d];
        rem /= l.local_shape[d];
      }
      if (l.shard_dim >= 0) idx[size_t(l.shard_dim)] += l.shard_start;
      for (size_t d = idx.size(); d-- > 0;) {
        g += idx[d] * stride;
        stride *= l.global_shape[d];
      }
      float v = value(l.name, g, salt);
      if (dt == DType::F32) t.data<float>()[l.offset + i] = v;
      else t.data<bf16>()[l.offset + i] = to_bf16(v);
    }
  }
  return t;
}

// Every piece a rank of a tp x dp layout holds: bf16 weights (written by dp rank 0) and the
// distributed optimizer's fp32 exp_avg / exp_avg_sq shards.
struct RankState {
  Tensor weights, exp_avg, exp_avg_sq;  // exp_*: this dp rank's shard of the flat buffer
  int64_t lo = 0;
  std::vector<ShardedTensor> shards;
};

RankState rank_state(int tp, int tp_rank, int dp, int dp_rank, bool fill) {
  RankLayout l = layout_for(tp, tp_rank, dp);
  RankState s;
  const int64_t shard = l.numel / dp;
  s.lo = shard * dp_rank;
  if (fill) {
    s.weights = filled_buffer(l, DType::BF16, 0);
    s.exp_avg = filled_buffer(l, DType::F32, 1).flat_slice(s.lo, shard, {shard}).to(Device::cpu());
    s.exp_avg_sq = filled_buffer(l, DType::F32, 2).flat_slice(s.lo, shard, {shard}).to(Device::cpu());
  } else {
    s.weights = Tensor::zeros({l.numel}, DType::BF16);
    s.exp_avg = Tensor::zeros({shard}, DType::F32);
    s.exp_avg_sq = Tensor::zeros({shard}, DType::F32);
  }
  auto add = [&](std::vector<ShardedTensor> v) { s.shards.insert(s.shards.end(), v.begin(), v.end()); };
  add(shard_flat_buffer(l.tensors, "", s.weights, 0, dp_rank, tp_rank));
  add(shard_flat_buffer(l.tensors, "optimizer.exp_avg.", s.exp_avg, s.lo, 0, tp_rank));
  add(shard_flat_buffer(l.tensors, "optimizer.exp_avg_sq.", s.exp_avg_sq, s.lo, 0, tp_rank));
  return s;
}

// Expected bytes of each tensor the rank holds, compared with what it loaded.
void expect_rank_state_equal(const RankState& got, const RankState& want, const std::string& what) {
  ASSERT_EQ(got.shards.size(), want.shards.size());
  for (size_t i = 0; i < got.shards.size(); ++i) {
    const Tensor& a = got.shards[i].data;
    const Tensor& b = want.shards[i].data;
    ASSERT_EQ(a.nbytes(), b.nbytes());
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what << ": " << got.shards[i].name;
  }
}

// Runs fn(rank, barrier) on `world` threads: ranks of one simulated job. A rank that throws
// leaves the barrier (as a dead process would, once the launcher tears the job down), so the
// others are not stuck; the first UserError (else the last exception) is rethrown.
void run_ranks(int world, const std::function<void(int, const std::function<void()>&)>& fn) {
  std::barrier sync(world);
  std::function<void()> bar = [&] { sync.arrive_and_wait(); };
  std::vector<std::thread> th;
  std::mutex mu;
  std::exception_ptr err;
  bool user_error = false;  // a UserError wins: it says what the job saw
  for (int r = 0; r < world; ++r)
    th.emplace_back([&, r] {
      try {
        fn(r, bar);
      } catch (const UserError&) {
        sync.arrive_and_drop();
        std::lock_guard<std::mutex> lock(mu);
        err = std::current_exception();
        user_error = true;
      } catch (...) {
        sync.arrive_and_drop();
        std::lock_guard<std::mutex> lock(mu);
        if (!user_error) err = std::current_exception();
      }
    });
  for (auto& t : th) t.join();
  if (err) std::rethrow_exception(err);
}

nlohmann::json common_state(int64_t iteration) {
  return {{"iteration", iteration},
          {"consumed_train_samples", iteration * 32},
          {"rng", {{"seed", 1234}}},
          {"args", {{"num_layers", 1}, {"hidden_size", 6}}}};
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("mt_ckpt_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Saves the tp x dp layout's state as iteration `it` (one thread per rank).
  void save_layout(int tp, int dp, int64_t it, SaveOptions base = {}) {
    run_ranks(tp * dp, [&](int rank, const std::function<void()>& bar) {
      RankState s = rank_state(tp, rank % tp, dp, rank / tp, true);
      SaveOptions o = base;
      o.rank = rank;
      o.world_size = tp * dp;
      o.barrier = bar;
      o.layout.tp = tp;
      o.layout.dp = dp;
      o.layout.distributed_optimizer = true;
      save_checkpoint(dir_, it, s.shards, common_state(it), o);
    });
  }

  // Loads under tp x dp and checks every rank's tensors against the expected values.
  void load_and_check(int tp, int dp, const std::string& what) {
    CheckpointReader reader(dir_, -1, nullptr);
    for (int rank = 0; rank < tp * dp; ++rank) {
      RankState got = rank_state(tp, rank % tp, dp, rank / tp, false);
      reader.load(got.shards);
      expect_rank_state_equal(got, rank_state(tp, rank % tp, dp, rank / tp, true),
                              what + " rank " + std::to_string(rank));
    }
  }

  std::string iter_dir(int64_t it) const { return dir_ + "/" + iteration_dir_name(it); }
  std::string shard_path(int64_t it, int rank, int world) const {
    return iter_dir(it) + "/" + fmt::format("shard_{:05d}_of_{:05d}.safetensors", rank, world);
  }

  std::string dir_;
};

template <class F> std::string user_error(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no UserError";
  return "";
}

std::string read_file(const std::string& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Captures what find_latest_checkpoint / CheckpointReader warn.
struct WarnCapture {
  std::FILE* f = std::tmpfile();
  ~WarnCapture() { std::fclose(f); }
  std::string text() {
    std::fflush(f);
    std::rewind(f);
    std::string s;
    char buf[512];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    return s;
  }
};

}  // namespace

TEST_F(CheckpointTest, RoundTripSingleRank) {
  Tensor a = Tensor::empty({3, 5}, DType::F32), b = Tensor::empty({7}, DType::BF16), c = Tensor::empty({2, 2, 2}, DType::I64);
  for (int64_t i = 0; i < 15; ++i) a.data<float>()[i] = float(i) * 0.25f - 1.0f;
  for (int64_t i = 0; i < 7; ++i) b.data<bf16>()[i] = to_bf16(float(i) - 3.0f);
  for (int64_t i = 0; i < 8; ++i) c.data<int64_t>()[i] = i * 1000000007LL;
  std::vector<ShardedTensor> s = {ShardedTensor::whole("a", a), ShardedTensor::whole("b", b),
                                  ShardedTensor::whole("c", c)};
  save_checkpoint(dir_, 7, s, common_state(7), {});
  EXPECT_EQ(read_file(tracker_path(dir_)), "7");
  EXPECT_EQ(find_latest_checkpoint(dir_, nullptr), 7);

  Tensor a2 = Tensor::zeros({3, 5}, DType::F32), b2 = Tensor::zeros({7}, DType::BF16), c2 = Tensor::zeros({2, 2, 2}, DType::I64);
  int64_t it = -1;
  nlohmann::json common = load_checkpoint(dir_, {ShardedTensor::whole("a", a2), ShardedTensor::whole("b", b2),
                                                 ShardedTensor::whole("c", c2)}, &it);
  EXPECT_EQ(it, 7);
  EXPECT_EQ(common, common_state(7));
  EXPECT_EQ(std::memcmp(a.raw(), a2.raw(), a.nbytes()), 0);
  EXPECT_EQ(std::memcmp(b.raw(), b2.raw(), b.nbytes()), 0);
  EXPECT_EQ(std::memcmp(c.raw(), c2.raw(), c.nbytes()), 0);

  // A bf16 tensor loads into an fp32 one (and the reverse would round).
  Tensor bf = Tensor::zeros({7}, DType::F32);
  CheckpointReader(dir_, -1, nullptr).load({ShardedTensor::whole("b", bf)});
  EXPECT_EQ(bf.data<float>()[6], 3.0f);
  // An empty directory holds no checkpoint.
  EXPECT_EQ(load_checkpoint(dir_ + "/nothing", {}, &it), nlohmann::json());
  EXPECT_EQ(it, -1);
}

TEST_F(CheckpointTest, SaveTp2Dp2LoadsUnderAnyLayoutBitIdentical) {
  save_layout(2, 2, 100);
  EXPECT_EQ(read_file(tracker_path(dir_)), "100");
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(fs::exists(shard_path(100, r, 4)));
  CheckpointReader reader(dir_, -1, nullptr);
  EXPECT_EQ(reader.iteration(), 100);
  EXPECT_EQ(reader.world_size(), 4);
  EXPECT_EQ(reader.layout().tp, 2);
  EXPECT_EQ(reader.layout().dp, 2);
  EXPECT_EQ(reader.common()["consumed_train_samples"], 3200);
  EXPECT_EQ(reader.tensors().size(), 3 * kModel.size());
  reader.verify_all();

  load_and_check(1, 1, "1 rank");
  load_and_check(4, 1, "tp=4");
  load_and_check(1, 4, "dp=4");
  load_and_check(2, 2, "tp=2 dp=2");
  load_and_check(4, 2, "tp=4 dp=2");
}

TEST_F(CheckpointTest, SaveDp4LoadsAsTp2) {
  save_layout(1, 4, 5);
  load_and_check(2, 1, "tp=2");
  load_and_check(2, 2, "tp=2 dp=2");
}

TEST_F(CheckpointTest, IncompleteLatestIterationIsSkippedWithAWarning) {
  save_layout(2, 1, 10);
  SaveOptions fail;
  fail.on_event = [](const std::string& e) {
    if (e == "begin 1") throw std::runtime_error("rank died");
  };
  // Rank 0 finds rank 1's shard missing and leaves the iteration incomplete.
  std::string e = user_error([&] { save_layout(2, 1, 20, fail); });
  EXPECT_NE(e.find("rank 1 did not write its checkpoint shard"), std::string::npos) << e;
  EXPECT_TRUE(fs::exists(shard_path(20, 0, 2)));
  EXPECT_FALSE(fs::exists(iter_dir(20) + "/metadata.json"));
  EXPECT_EQ(read_file(tracker_path(dir_)), "10");

  WarnCapture w;
  EXPECT_EQ(find_latest_checkpoint(dir_, w.f), 10);
  EXPECT_NE(w.text().find("skipping incomplete checkpoint " + iter_dir(20)), std::string::npos) << w.text();
  load_and_check(1, 1, "after an interrupted save");

  // Without a tracker the newest complete iteration is taken, also with a warning.
  fs::remove(tracker_path(dir_));
  WarnCapture w2;
  EXPECT_EQ(find_latest_checkpoint(dir_, w2.f), 10);
  EXPECT_NE(w2.text().find("iter_0000020"), std::string::npos);
  EXPECT_NE(w2.text().find("latest_checkpointed_iteration.txt is missing"), std::string::npos);

  // The next save of that iteration cleans the partial directory and completes it.
  save_layout(2, 1, 20);
  EXPECT_EQ(find_latest_checkpoint(dir_, nullptr), 20);
  load_and_check(2, 1, "re-saved");
}

TEST_F(CheckpointTest, TrackerIsWrittenLast) {
  std::mutex mu;
  std::vector<std::string> events;
  SaveOptions o;
  o.on_event = [&](const std::string& e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(e);
    if (e == "metadata") {
      EXPECT_FALSE(fs::exists(tracker_path(dir_)) && read_file(tracker_path(dir_)) == "3");
    }
  };
  save_layout(2, 1, 3, o);
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[4], "metadata");
  EXPECT_EQ(events[5], "tracker");
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(events[size_t(i)].rfind("begin", 0) == 0 || events[size_t(i)].rfind("shard", 0) == 0);
  }

  // Dying between metadata.json and the tracker: the tracker still names the old iteration, and
  // it is what loads (with a warning about the newer one); the next save replaces it.
  SaveOptions die;
  die.on_event = [](const std::string& e) {
    if (e == "metadata") throw std::runtime_error("killed");
  };
  EXPECT_THROW(save_layout(2, 1, 4, die), std::runtime_error);
  EXPECT_EQ(read_file(tracker_path(dir_)), "3");
  WarnCapture w;
  EXPECT_EQ(find_latest_checkpoint(dir_, w.f), 3);
  EXPECT_NE(w.text().find("ignoring checkpoint " + iter_dir(4)), std::string::npos) << w.text();
  save_layout(2, 1, 4);
  EXPECT_EQ(find_latest_checkpoint(dir_, nullptr), 4);
}

TEST_F(CheckpointTest, KeepLastDeletesOnlyAfterTheNewerIsComplete) {
  std::vector<std::string> events;
  std::mutex mu;
  SaveOptions o;
  o.keep_last = 2;
  o.on_event = [&](const std::string& e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(e);
  };
  for (int64_t it = 1; it <= 4; ++it) save_layout(1, 1, it, o);
  EXPECT_FALSE(fs::exists(iter_dir(1)));
  EXPECT_FALSE(fs::exists(iter_dir(2)));
  EXPECT_TRUE(fs::exists(iter_dir(3)));
  EXPECT_TRUE(fs::exists(iter_dir(4)));
  // Each deletion follows the tracker update of the iteration that replaces it.
  auto pos = [&](const std::string& e) { return std::find(events.begin(), events.end(), e) - events.begin(); };
  EXPECT_LT(pos("deleted iter_0000001"), int64_t(events.size()));
  EXPECT_EQ(std::count(events.begin(), events.end(), "deleted iter_0000001"), 1);
  int64_t tracker_of_3 = 0, seen = 0;
  for (size_t i = 0; i < events.size(); ++i)
    if (events[i] == "tracker" && ++seen == 3) tracker_of_3 = int64_t(i);
  EXPECT_GT(pos("deleted iter_0000001"), tracker_of_3);

  // A save that fails before completing deletes nothing.
  SaveOptions fail = o;
  fail.on_event = [](const std::string& e) {
    if (e == "shard 0") throw std::runtime_error("disk full");
  };
  EXPECT_THROW(save_layout(1, 1, 5, fail), std::runtime_error);
  EXPECT_TRUE(fs::exists(iter_dir(3)));
  EXPECT_TRUE(fs::exists(iter_dir(4) + "/metadata.json"));
  // The next complete save removes the old one and the partial leftovers below it.
  save_layout(1, 1, 6, o);
  EXPECT_FALSE(fs::exists(iter_dir(3)));
  EXPECT_FALSE(fs::exists(iter_dir(5)));
  EXPECT_TRUE(fs::exists(iter_dir(4)));
  EXPECT_TRUE(fs::exists(iter_dir(6)));
}

TEST_F(CheckpointTest, TruncatedShardIsAnErrorNamingTheFile) {
  save_layout(2, 1, 1);
  const std::string p = shard_path(1, 1, 2);
  fs::resize_file(p, fs::file_size(p) - 10);
  std::string e = user_error([&] { load_and_check(2, 1, "truncated"); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
}

TEST_F(CheckpointTest, FlippedByteIsAChecksumErrorNamingFileAndTensor) {
  save_layout(1, 1, 1);
  const std::string p = shard_path(1, 0, 1);
  {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-3, std::ios::end);  // inside the last stored piece
    char c;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(-3, std::ios::end);
    f.write(&c, 1);
  }
  std::string e = user_error([&] { load_and_check(1, 1, "flipped"); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
  EXPECT_NE(e.find("tensor \""), std::string::npos) << e;
  EXPECT_THROW(CheckpointReader(dir_, -1, nullptr).verify_all(), UserError);

  // A flipped byte in a shard's header, or in common.json, is caught too.
  save_layout(1, 1, 2);
  {
    std::fstream f(shard_path(2, 0, 1), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.write("X", 1);
  }
  e = user_error([&] { load_and_check(1, 1, "header"); });
  EXPECT_NE(e.find("header checksum mismatch"), std::string::npos) << e;
  save_layout(1, 1, 3);
  { std::ofstream(iter_dir(3) + "/common.json", std::ios::app) << " "; }
  e = user_error([&] { CheckpointReader r(dir_, -1, nullptr); });
  EXPECT_NE(e.find("common.json"), std::string::npos) << e;
}

TEST_F(CheckpointTest, MissingMetadataOfTheTrackedIterationIsAnError) {
  save_layout(1, 1, 1);
  save_layout(1, 1, 2);
  fs::remove(iter_dir(2) + "/metadata.json");
  std::string e = user_error([&] { CheckpointReader r(dir_, -1, nullptr); });
  EXPECT_NE(e.find(iter_dir(2) + "/metadata.json"), std::string::npos) << e;
  EXPECT_NE(e.find("iter_0000001 is the newest complete one"), std::string::npos) << e;
  // An explicit iteration still loads.
  CheckpointReader r(dir_, 1, nullptr);
  EXPECT_EQ(r.iteration(), 1);
}

TEST_F(CheckpointTest, ShapeMismatchNamesTheTensor) {
  save_layout(1, 1, 1);
  CheckpointReader r(dir_, -1, nullptr);
  Tensor t = Tensor::zeros({8, 7}, DType::BF16);
  std::string e = user_error([&] { r.load({ShardedTensor::whole("decoder.layers.0.mlp.linear_fc1.weight", t)}); });
  EXPECT_NE(e.find("decoder.layers.0.mlp.linear_fc1.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[8, 6]"), std::string::npos) << e;
  EXPECT_NE(e.find("mismatched architecture"), std::string::npos) << e;
  EXPECT_NE(e.find("metadata.json"), std::string::npos) << e;

  e = user_error([&] { r.load({ShardedTensor::whole("decoder.layers.1.mlp.linear_fc1.weight", t)}); });
  EXPECT_NE(e.find("no tensor \"decoder.layers.1.mlp.linear_fc1.weight\""), std::string::npos) << e;
  ShardedTensor optional = ShardedTensor::whole("decoder.layers.1.mlp.linear_fc1.weight", t);
  optional.allow_missing = true;
  r.load({optional});

  e = user_error([&] {
    check_args_match({{"num_layers", 24}, {"hidden_size", 6}}, {{"num_layers", 12}, {"hidden_size", 6}},
                     {"num_layers", "hidden_size"}, r.path());
  });
  EXPECT_NE(e.find("--num-layers: checkpoint 24, now 12"), std::string::npos) << e;
}

TEST_F(CheckpointTest, VocabularyPaddingIsNotStoredAndOldPaddedCheckpointsLoad) {
  // An embedding of 13 real rows padded to 16, under tp=2 (8 rows each): saved as [13, 6].
  auto layout = [](int tp_rank, int64_t stored_rows) {
    FlatTensorLayout e{"embedding.word_embeddings.weight", {8, 6}, 0, {16, 6}, 0, 8 * tp_rank};
    e.stored_rows = stored_rows;
    return std::vector<FlatTensorLayout>{e};
  };
  auto buffer = [](int tp_rank) {
    Tensor t = Tensor::empty({48}, DType::F32);
    for (int64_t i = 0; i < 48; ++i) t.data<float>()[i] = value("e", tp_rank * 48 + i, 0);
    return t;
  };
  std::vector<Tensor> bufs = {buffer(0), buffer(1)};
  run_ranks(2, [&](int rank, const std::function<void()>& bar) {
    SaveOptions o;
    o.rank = rank;
    o.world_size = 2;
    o.barrier = bar;
    save_checkpoint(dir_, 1, shard_flat_buffer(layout(rank, 13), "", bufs[size_t(rank)], 0, 0, rank), common_state(1), o);
  });
  {
    CheckpointReader r(dir_, -1, nullptr);
    EXPECT_EQ(r.tensors().at("embedding.word_embeddings.weight").global_shape, (Shape{13, 6}));
    // One rank, vocabulary padded to 14: the 13 real rows come back, the padding row is untouched.
    FlatTensorLayout one{"embedding.word_embeddings.weight", {14, 6}, 0, {14, 6}, -1, 0};
    one.stored_rows = 13;
    Tensor got = Tensor::empty({84}, DType::F32);
    for (int64_t i = 0; i < 84; ++i) got.data<float>()[i] = -1.0f;
    r.load(shard_flat_buffer({one}, "", got, 0));
    for (int64_t i = 0; i < 84; ++i) EXPECT_EQ(got.data<float>()[i], i < 78 ? value("e", i, 0) : -1.0f) << i;
    // Without stored_rows the shapes conflict.
    FlatTensorLayout plain{"embedding.word_embeddings.weight", {14, 6}, 0, {14, 6}, -1, 0};
    std::string e = user_error([&] { r.load(shard_flat_buffer({plain}, "", got, 0)); });
    EXPECT_NE(e.find("mismatched architecture"), std::string::npos) << e;
  }
  // A checkpoint written before padding was stripped ([16, 6], padding stored) loads into a
  // layout that strips it: the extra rows are not read.
  run_ranks(2, [&](int rank, const std::function<void()>& bar) {
    SaveOptions o;
    o.rank = rank;
    o.world_size = 2;
    o.barrier = bar;
    save_checkpoint(dir_, 2, shard_flat_buffer(layout(rank, -1), "", bufs[size_t(rank)], 0, 0, rank), common_state(2), o);
  });
  CheckpointReader old(dir_, -1, nullptr);
  EXPECT_EQ(old.tensors().at("embedding.word_embeddings.weight").global_shape, (Shape{16, 6}));
  FlatTensorLayout one{"embedding.word_embeddings.weight", {13, 6}, 0, {13, 6}, -1, 0};
  one.stored_rows = 13;
  Tensor got = Tensor::zeros({78}, DType::F32);
  old.load(shard_flat_buffer({one}, "", got, 0));
  for (int64_t i = 0; i < 78; ++i) EXPECT_EQ(got.data<float>()[i], value("e", i, 0)) << i;
  // More real rows than the checkpoint holds is still an error.
  FlatTensorLayout big{"embedding.word_embeddings.weight", {20, 6}, 0, {20, 6}, -1, 0};
  big.stored_rows = 17;
  Tensor got_big = Tensor::zeros({120}, DType::F32);
  std::string e = user_error([&] { old.load(shard_flat_buffer({big}, "", got_big, 0)); });
  EXPECT_NE(e.find("[16, 6] in the checkpoint but [17, 6]"), std::string::npos) << e;
}

TEST_F(CheckpointTest, AsyncSaveSnapshotsAndCompletesOnFinalize) {
  AsyncCheckpointSaver saver;
  std::vector<RankState> states;
  for (int r = 0; r < 2; ++r) states.push_back(rank_state(2, r, 1, 0, true));
  std::vector<std::unique_ptr<AsyncCheckpointSaver>> savers(2);
  run_ranks(2, [&](int rank, const std::function<void()>& bar) {
    savers[size_t(rank)] = std::make_unique<AsyncCheckpointSaver>();
    SaveOptions o;
    o.rank = rank;
    o.world_size = 2;
    o.barrier = bar;
    savers[size_t(rank)]->start(dir_, 8, states[size_t(rank)].shards, common_state(8), o);
    EXPECT_TRUE(savers[size_t(rank)]->in_flight());
    // Training goes on and changes the weights; the checkpoint keeps the snapshot.
    states[size_t(rank)].weights.zero_();
    states[size_t(rank)].exp_avg.zero_();
    EXPECT_EQ(savers[size_t(rank)]->finalize(), 8);
    EXPECT_FALSE(savers[size_t(rank)]->in_flight());
  });
  EXPECT_EQ(read_file(tracker_path(dir_)), "8");
  load_and_check(1, 2, "async");
  // A second start finalizes the first.
  RankState s = rank_state(1, 0, 1, 0, true);
  saver.start(dir_, 9, s.shards, common_state(9), {});
  saver.start(dir_, 10, s.shards, common_state(10), {});
  EXPECT_EQ(read_file(tracker_path(dir_)), "9");
  EXPECT_EQ(saver.finalize(), 10);
  EXPECT_EQ(saver.finalize(), -1);
  EXPECT_EQ(find_latest_checkpoint(dir_, nullptr), 10);
}

TEST_F(CheckpointTest, KillDuringSaveKeepsThePreviousCheckpoint) {
  save_layout(2, 1, 1);
  const std::string partial = shard_path(2, 1, 2);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A slowed writer: rank 1 writes its shard, rank 0 stalls before its own.
    SaveOptions slow;
    slow.on_event = [](const std::string& e) {
      if (e == "begin 0") std::this_thread::sleep_for(std::chrono::seconds(30));
    };
    try {
      save_layout(2, 1, 2, slow);
    } catch (...) {
    }
    ::_exit(0);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!fs::exists(partial) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(fs::exists(partial)) << "the child never wrote its shard";
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));

  EXPECT_EQ(read_file(tracker_path(dir_)), "1");
  WarnCapture w;
  EXPECT_EQ(find_latest_checkpoint(dir_, w.f), 1);
  EXPECT_NE(w.text().find("iter_0000002"), std::string::npos);
  load_and_check(1, 2, "after kill -9");
  // Resuming and saving iteration 2 again works.
  save_layout(2, 1, 2);
  EXPECT_EQ(find_latest_checkpoint(dir_, nullptr), 2);
}
