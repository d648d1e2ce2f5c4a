#include "checkpoint/megatron_lm_convert.h"

#include <filesystem>

#include "checkpoint/checkpoint_stream.h"
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

}  // namespace mt
