#include "checkpoint/megatron_lm_convert.h"

#include <filesystem>

#include "checkpoint/checkpoint_stream.h"
#include "checkpoint/hf_weights.h"
#include "core/error.h"
#include "kernels/elementwise.h"

namespace mt {

MegatronLmConvertStats convert_megatron_lm_to_checkpoint(const MegatronLmCheckpoint& in, const std::string& out_dir,
                                                         const nlohmann::json& common, const CheckpointLayout& layout,
                                                         std::optional<DType> dtype) {
  MegatronLmConvertStats st;
  std::vector<SafetensorsSpec> specs = in.tensors();
  if (dtype)
    for (SafetensorsSpec& s : specs) s.dtype = *dtype;
  in.check();  // every shape, and nothing left over, before anything is written
  CheckpointStreamWriter out(out_dir, 0, specs, common, layout);
  for (size_t k : out.order()) {
    Tensor t = in.read(specs[k].name);
    st.bytes_read += t.nbytes();
    if (t.dtype() != specs[k].dtype) {
      Tensor c = Tensor::empty(t.shape(), specs[k].dtype);
      cast(t, c);
      t = c;
    }
    out.write(t);
    ++st.tensors;
  }
  st.bytes_written = out.finish();
  return st;
}

uint64_t load_megatron_lm_weights_into(const MegatronLmCheckpoint& in, ParamAndGradBuffer& buf) {
  uint64_t bytes = 0;
  for (int id = 0; id < int(buf.infos().size()); ++id) {
    const ParamInfo& p = buf.info(id);
    const Tensor whole = in.read(p.name);
    bytes += whole.nbytes();
    assign_param(param_box(whole, p), buf.param(id));
  }
  return bytes;
}

}  // namespace mt
