// Maps checkpoint tensors to layer weights: checks each tensor's shape, converts to the compute
// dtype, fuses projections, and reports tensors nobody asked for.
#pragma once

#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "blockinfer/tensor.h"
#include "models/model.h"
#include "models/safetensors.h"

namespace blockinfer {

class WeightLoader {
 public:
  WeightLoader(const std::string& dir, const LoadOptions& options);

  // The tensor `name` with exactly `shape`, in the load dtype on the load device.
  Tensor get(const std::string& name, const std::vector<int64_t>& shape);
  // Tensors stacked along dim 0 (e.g. q|k|v or gate|up), each checked against its own shape.
  Tensor get_fused(const std::vector<std::string>& names,
                   const std::vector<std::vector<int64_t>>& shapes);
  // A norm weight: dummy loads fill it near 1 rather than with noise.
  Tensor get_norm(const std::string& name, int64_t size);
  bool has(const std::string& name) const;
  // Throws InvalidArgument naming every checkpoint tensor that no get() consumed.
  void check_all_consumed() const;

 private:
  // Dummy weights (load_format="dummy"), made on the CPU in the load dtype; one stream (seed) a call.
  Tensor dummy(const std::vector<int64_t>& shape, float mean, float std);
  void fill_dummy(void* dst, int64_t n, float mean, float std);  // n elements of the load dtype
  static float dummy_std(const std::vector<int64_t>& shape);
  // The checkpoint's tensor `name`, checked against `shape`: a view of the mapping, in its stored dtype.
  Tensor read(const std::string& name, const std::vector<int64_t>& shape);
  Tensor to_device(const Tensor& cpu) const;  // an owned CPU tensor on the load device

  LoadOptions options_;
  std::unique_ptr<CheckpointReader> reader_;  // null for load_format="dummy"
  std::set<std::string> consumed_;
  std::mt19937_64 rng_;
};

}  // namespace blockinfer
