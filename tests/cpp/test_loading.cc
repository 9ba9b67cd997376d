// Host-side loading: float conversion of whole tensors (checkpoints and dummy weights go through
// it) and the dummy weights that benchmarks load, against plain per-element rules.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <iterator>
#include <limits>
#include <vector>

#include <unistd.h>

#include "blockinfer/tensor.h"
#include "models/weight_loader.h"
#include "test_harness.h"

using namespace blockinfer;

namespace {

using bitest::randn;

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

}  // namespace

// to_dtype runs over the host's threads above 2^20 elements (checkpoints and dummy weights go
// through it at load): every element must still be what the scalar helpers give, special values
// included (NaN, infinities, signed zeros, float32 and float16 subnormals, rounding ties,
// float16 overflow), in all six directions.
TEST(to_dtype_converts_every_element_as_the_scalar_helpers_do) {
  const int64_t n = (int64_t{1} << 20) + 12345;
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY, 0.f, -0.f,
                            1e-40f, -3e-39f, 6e-8f, 3e-5f, 65504.f, 65520.f, 1e6f, -7e4f,
                            1.00390625f /* a bf16 tie */, 1.01171875f, 2049.f /* a fp16 tie */};
  std::vector<float> v = randn(static_cast<size_t>(n), 21, 3.f);
  for (size_t i = 0; i < v.size(); i += 997) v[i] = specials[(i / 997) % std::size(specials)];
  Tensor f32 = Tensor::empty({n}, DType::kFloat32);
  std::copy(v.begin(), v.end(), f32.data<float>());
  auto bits = [](float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
  };
  for (DType half : {DType::kBFloat16, DType::kFloat16}) {
    const bool bf = half == DType::kBFloat16;
    auto down = [bf](float f) { return bf ? float_to_bf16(f) : float_to_half(f); };
    auto up = [bf](uint16_t h) { return bf ? bf16_to_float(h) : half_to_float(h); };
    Tensor h = f32.to_dtype(half);
    Tensor back = h.to_dtype(DType::kFloat32);
    Tensor other = h.to_dtype(bf ? DType::kFloat16 : DType::kBFloat16);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = down(v[static_cast<size_t>(i)]);
      const uint16_t cross = bf ? float_to_half(up(want)) : float_to_bf16(up(want));
      bad += h.data<uint16_t>()[i] != want || bits(back.data<float>()[i]) != bits(up(want)) ||
             other.data<uint16_t>()[i] != cross;
    }
    EXPECT_EQ(bad, int64_t{0});
  }
  Tensor ids = Tensor::zeros({n}, DType::kInt32);
  EXPECT_THROWS(ids.to_dtype(DType::kBFloat16), InvalidArgument);
  EXPECT_THROWS(f32.to_dtype(DType::kInt32), InvalidArgument);
}

// load_format="dummy" makes the weights straight in the load dtype; they must be the float32
// dummy weights rounded (what loading them in float32 and converting gave), stream by stream in
// the order of the calls, for plain, fused and norm weights. Their scale is what the loader
// promises (a benchmark on zeros would draw less power and time faster than on real weights).
TEST(dummy_weights_in_16_bits_are_the_float32_ones_rounded) {
  auto load = [](DType dtype, uint64_t seed) {
    LoadOptions o;
    o.load_format = "dummy";
    o.dtype = dtype;
    o.dummy_seed = seed;
    WeightLoader w("unused", o);
    std::vector<Tensor> got;
    got.push_back(w.get("a", {640, 1536}));  // 983,040 elements: under the threads' threshold
    got.push_back(w.get_fused({"q", "k", "v"}, {{1024, 512}, {256, 512}, {256, 512}}));
    got.push_back(w.get_norm("n", 512));
    got.push_back(w.get("big", {1100, 1024}));  // over 2^20: filled by the host's threads
    return got;
  };
  const std::vector<Tensor> f32 = load(DType::kFloat32, 7);
  for (DType dt : {DType::kBFloat16, DType::kFloat16}) {
    const std::vector<Tensor> h = load(dt, 7);
    for (size_t i = 0; i < f32.size(); ++i) EXPECT_TRUE(same_bits(h[i], f32[i].to_dtype(dt)));
  }
  const std::vector<Tensor> again = load(DType::kFloat32, 7), other = load(DType::kFloat32, 8);
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_TRUE(same_bits(again[i], f32[i]));
    EXPECT_TRUE(!same_bits(other[i], f32[i]));
  }
  // Scale: matrices uniform with std 1/sqrt(columns) around 0; norms std 0.02 around 1.
  auto moments = [](const Tensor& t, int64_t begin, int64_t end) {
    double s = 0, s2 = 0;
    for (int64_t i = begin; i < end; ++i) {
      const double x = t.data<float>()[i];
      s += x;
      s2 += x * x;
    }
    const double n = static_cast<double>(end - begin), mean = s / n;
    return std::pair{mean, std::sqrt(s2 / n - mean * mean)};
  };
  const auto [m0, s0] = moments(f32[0], 0, f32[0].numel());
  EXPECT_NEAR(m0, 0.0, 1e-3);
  EXPECT_NEAR(s0, 1.0 / std::sqrt(1536.0), 0.01 / std::sqrt(1536.0));
  const auto [mk, sk] = moments(f32[1], 1024 * 512, 1280 * 512);  // the fused k part
  EXPECT_NEAR(mk, 0.0, 2e-3);
  EXPECT_NEAR(sk, 1.0 / std::sqrt(512.0), 0.02 / std::sqrt(512.0));
  const auto [mn, sn] = moments(f32[2], 0, 512);
  EXPECT_NEAR(mn, 1.0, 5e-3);
  EXPECT_NEAR(sn, 0.02, 4e-3);
}

// A checkpoint's tensors go straight from their stored dtype to the load dtype (a copy as they
// are where the two agree). Each must be what the float32 value of the stored tensor gives through
// to_dtype, which is what loading through a float32 copy gave: a small safetensors file holds
// the same values stored as F32, BF16 and F16, and a fused weight mixes the three.
TEST(checkpoint_tensors_load_in_each_dtype_as_their_float32_values_rounded) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("bi_test_loading_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const int64_t rows = 3, cols = 5, n = rows * cols;
  std::vector<float> v = randn(static_cast<size_t>(n), 31, 2.f);
  v[0] = 1.00390625f;  // a bfloat16 tie
  v[1] = 2049.f;       // a float16 tie
  Tensor f32 = Tensor::empty({rows, cols}, DType::kFloat32);
  std::copy(v.begin(), v.end(), f32.data<float>());
  const Tensor stored[3] = {f32, f32.to_dtype(DType::kBFloat16), f32.to_dtype(DType::kFloat16)};
  const char* names[3] = {"w_f32", "w_bf16", "w_f16"};
  const char* st_dtypes[3] = {"F32", "BF16", "F16"};
  std::string header = "{", data;
  for (int i = 0; i < 3; ++i) {
    const size_t begin = data.size();
    data.append(static_cast<const char*>(stored[i].raw_data()), stored[i].nbytes());
    header += std::string(i ? "," : "") + "\"" + names[i] + "\":{\"dtype\":\"" + st_dtypes[i] +
              "\",\"shape\":[3,5],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  }
  header += "}";
  {
    std::ofstream f(dir / "model.safetensors", std::ios::binary);
    const uint64_t len = header.size();
    f.write(reinterpret_cast<const char*>(&len), 8);
    f << header << data;
  }
  for (DType dt : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    LoadOptions o;
    o.dtype = dt;
    WeightLoader w(dir.string(), o);
    Tensor fused = w.get_fused({names[0], names[1], names[2]}, {{rows, cols}, {rows, cols}, {rows, cols}});
    EXPECT_TRUE(fused.dtype() == dt && fused.shape() == std::vector<int64_t>({3 * rows, cols}));
    const size_t part = static_cast<size_t>(n) * dtype_size(dt);
    for (int i = 0; i < 3; ++i) {
      const Tensor want = stored[i].to_dtype(DType::kFloat32).to_dtype(dt);
      EXPECT_TRUE(same_bits(w.get(names[i], {rows, cols}), want));
      EXPECT_TRUE(std::memcmp(static_cast<const char*>(fused.raw_data()) + i * part, want.raw_data(), part) == 0);
    }
    w.check_all_consumed();
    EXPECT_THROWS(w.get(names[0], {cols, rows}), InvalidArgument);
  }
  fs::remove_all(dir);
}

BITEST_MAIN()
