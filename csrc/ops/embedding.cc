#include "ops/embedding.h"

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/launchers.h"
#include "core/profiler.h"
#include "ops/common.h"

namespace blockinfer::ops {

void embedding(const Tensor& ids, const Tensor& table, Tensor& out) {
  OpTimer timer("embedding", ids.device());
  check_dim(ids, 1, "embedding: ids");
  check_dim(table, 2, "embedding: table");
  check_dim(out, 2, "embedding: out");
  check_dtype(ids, DType::kInt32, "embedding: ids");
  check_compute(table, ids.device(), "embedding: table");
  check_compute(out, ids.device(), "embedding: out");
  BI_CHECK_ARG(out.dtype() == table.dtype(), "embedding: out dtype must match the table's");
  BI_CHECK_ARG(out.size(0) == ids.size(0) && out.size(1) == table.size(1), "embedding: out shape ",
               out.shape_str(), " != [", ids.size(0), ", ", table.size(1), "]");
  const int32_t* p = ids.data<int32_t>();
  if (ids.device().is_cuda()) {
    // Device ids are not read back here: the engine validates every token id on the host.
    cuda::launch_embedding(p, table.raw_data(), out.raw_data(), ids.size(0), table.size(1),
                           table.dtype(), ids.device().index);
    return;
  }
  for (int64_t i = 0; i < ids.size(0); ++i)
    BI_CHECK_ARG(p[i] >= 0 && p[i] < table.size(0), "embedding: token id ", p[i], " at index ", i,
                 " is outside the vocabulary [0, ", table.size(0), ")");
  cpu::embedding(p, table.data<float>(), out.data<float>(), ids.size(0), table.size(1));
}

}  // namespace blockinfer::ops
