#include "comm/process_groups.h"

#include <array>

#include "core/error.h"

namespace mt {
namespace {

// Groups are built over five dimensions, tp fastest: tp, cp, ep, the expert-data-parallel index
// (kEdp: dp / EP) and pp. The data-parallel group of the dense layers varies ep and edp together.
enum Dim { kTp, kCp, kEp, kEdp, kPp, kDims };

std::array<int, kDims> dims_of(const ParallelLayout& l) {
  return {l.sizes.tp, l.sizes.cp, l.sizes.ep, l.expert_dp, l.sizes.pp};
}
std::array<int, kDims> coord_array(const RankCoords& c, const ParallelLayout& l) {
  return {c.tp, c.cp, c.ep, c.dp / l.sizes.ep, c.pp};
}

// Split `world` into the groups that vary exactly the dimensions in `in_group`: the color
// numbers the coordinates outside the group, the key orders ranks by those inside (tp fastest).
std::unique_ptr<Communicator> make_group(Communicator& world, const ParallelLayout& l, const RankCoords& c,
                                         std::initializer_list<Dim> in_group, const std::string& name) {
  auto dims = dims_of(l);
  auto co = coord_array(c, l);
  std::array<bool, kDims> inside{};
  for (Dim d : in_group) inside[d] = true;
  int color = 0, key = 0, color_mul = 1, key_mul = 1;
  for (int d = 0; d < kDims; ++d) {
    if (inside[d]) {
      key += co[d] * key_mul;
      key_mul *= dims[d];
    } else {
      color += co[d] * color_mul;
      color_mul *= dims[d];
    }
  }
  return world.split(color, key, name);
}

}  // namespace

ParallelLayout ParallelLayout::make(const ParallelSizes& s, int world) {
  auto positive = [](const char* flag, int v) {
    if (v < 1) MT_USER_ERROR("{} must be at least 1, got {}", flag, v);
  };
  positive("--tensor-model-parallel-size", s.tp);
  positive("--context-parallel-size", s.cp);
  positive("--expert-model-parallel-size", s.ep);
  positive("--pipeline-model-parallel-size", s.pp);
  const int64_t mp = int64_t(s.tp) * s.cp * s.ep * s.pp;
  if (world % mp != 0)
    MT_USER_ERROR(
        "world size {} is not a multiple of tensor ({}) x context ({}) x expert ({}) x pipeline ({}) parallel sizes "
        "= {}; launch a multiple of {} ranks or change the sizes (expert parallelism splits the data-parallel ranks)",
        world, s.tp, s.cp, s.ep, s.pp, mp, mp);
  ParallelLayout l;
  l.sizes = s;
  l.world = world;
  l.dp = int(world / (int64_t(s.tp) * s.cp * s.pp));
  l.expert_dp = l.dp / s.ep;
  return l;
}

RankCoords ParallelLayout::coords(int rank) const {
  RankCoords c;
  c.tp = rank % sizes.tp;
  rank /= sizes.tp;
  c.cp = rank % sizes.cp;
  rank /= sizes.cp;
  c.dp = rank % dp;
  c.ep = c.dp % sizes.ep;
  c.pp = rank / dp;
  return c;
}

int ParallelLayout::rank_of(const RankCoords& c) const {
  return c.tp + sizes.tp * (c.cp + sizes.cp * (c.dp + dp * c.pp));
}

ProcessGroups::ProcessGroups(std::unique_ptr<Communicator> world, const ParallelSizes& sizes)
    : world_(std::move(world)) {
  layout_ = ParallelLayout::make(sizes, world_->size());
  coords_ = layout_.coords(world_->rank());
  Communicator& w = *world_;
  tp_ = make_group(w, layout_, coords_, {kTp}, "tp");
  cp_ = make_group(w, layout_, coords_, {kCp}, "cp");
  ep_ = make_group(w, layout_, coords_, {kEp}, "ep");
  dp_ = make_group(w, layout_, coords_, {kEp, kEdp}, "dp");
  expert_dp_ = make_group(w, layout_, coords_, {kEdp}, "expert-dp");
  pp_ = make_group(w, layout_, coords_, {kPp}, "pp");
  mp_ = make_group(w, layout_, coords_, {kTp, kPp}, "mp");
  expert_mp_ = make_group(w, layout_, coords_, {kTp, kEp, kPp}, "expert-mp");
  tp_dp_ = make_group(w, layout_, coords_, {kTp, kEp, kEdp}, "tp-dp");
  dp_cp_ = make_group(w, layout_, coords_, {kCp, kEp, kEdp}, "dp-cp");
  // Embedding group: the first and last pipeline stages of each pipeline (one stage when PP = 1).
  const bool on_edge = coords_.pp == 0 || coords_.pp == sizes.pp - 1;
  RankCoords base = coords_;
  base.pp = 0;
  embd_ = w.split(on_edge ? layout_.rank_of(base) : -1, coords_.pp, "embedding");
}

}  // namespace mt
