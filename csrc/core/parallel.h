#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace blockinfer {

// Runs f(begin, end) over [0, n), split into one contiguous range per hardware thread; below
// `min_parallel` items, as one range on the calling thread. For elementwise host work (weight
// conversion, dummy weights) whose result does not depend on the split; f must not throw.
template <typename F>
void parallel_ranges(int64_t n, F&& f, int64_t min_parallel = int64_t{1} << 20) {
  const int64_t threads = n < min_parallel ? 1 : std::max<int64_t>(1, std::thread::hardware_concurrency());
  if (threads == 1) {
    if (n > 0) f(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int64_t k = 1; k < threads; ++k) pool.emplace_back([&f, n, k, threads] { f(n * k / threads, n * (k + 1) / threads); });
  f(int64_t{0}, n / threads);
  for (auto& th : pool) th.join();
}

}  // namespace blockinfer
