#include "core/profiler.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "kernels/cuda/cuda_runtime_api.h"

namespace blockinfer {
namespace {

struct Totals {
  std::mutex mu;
  std::map<std::string, std::pair<double, long>> by_op;  // seconds, calls
};

Totals& totals() {
  static Totals* t = new Totals;
  return *t;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void report() {
  Totals& t = totals();
  std::lock_guard<std::mutex> lock(t.mu);
  double all = 0;
  for (const auto& [_, v] : t.by_op) all += v.first;
  std::fprintf(stderr, "\nblockinfer profile (BLOCKINFER_PROFILE=1; device synchronised per op)\n");
  std::fprintf(stderr, "%-22s %10s %10s %8s %7s\n", "op", "total ms", "calls", "us/call", "share");
  for (const auto& [name, v] : t.by_op)
    std::fprintf(stderr, "%-22s %10.1f %10ld %8.1f %6.1f%%\n", name.c_str(), 1e3 * v.first, v.second,
                 1e6 * v.first / static_cast<double>(v.second), 100.0 * v.first / (all > 0 ? all : 1));
}

}  // namespace

bool profiling_enabled() {
  static const bool enabled = [] {
    const char* e = std::getenv("BLOCKINFER_PROFILE");
    const bool on = e && std::string(e) == "1";
    if (on) std::atexit(report);
    return on;
  }();
  return enabled;
}

OpTimer::OpTimer(const char* name, Device device) : name_(name), device_(device) {
  if (!profiling_enabled()) return;
  if (device_.is_cuda()) cuda::synchronize();
  start_ = now();
}

OpTimer::~OpTimer() {
  if (!profiling_enabled()) return;
  if (device_.is_cuda()) cuda::synchronize();
  const double dt = now() - start_;
  Totals& t = totals();
  std::lock_guard<std::mutex> lock(t.mu);
  auto& v = t.by_op[name_];
  v.first += dt;
  v.second += 1;
}

}  // namespace blockinfer
