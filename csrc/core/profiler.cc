#include "core/profiler.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_runtime_api.h"

namespace blockinfer {
namespace {

struct Totals {
  std::mutex mu;
  std::map<std::string, std::pair<double, long>> by_op;  // seconds, calls
  // BLOCKINFER_PROFILE=events: (op, start, end) CUDA events, read at exit.
  std::vector<std::tuple<std::string, void*, void*>> pending;
};

int profile_mode() {  // 0 off, 1 synchronised wall time, 2 CUDA events, 3 coarse CUDA events
  static const int mode = [] {
    const char* e = std::getenv("BLOCKINFER_PROFILE");
    const std::string v = e ? e : "";
    return v == "1" ? 1 : v == "events" ? 2 : v == "steps" ? 3 : 0;
  }();
  return mode;
}

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
  for (auto& [name, start, end] : t.pending) {
    auto& v = t.by_op[name];
    v.first += 1e-3 * cuda::event_elapsed_ms(start, end);
    v.second += 1;
    cuda::event_destroy(start);
    cuda::event_destroy(end);
  }
  t.pending.clear();
  double all = 0;
  for (const auto& [_, v] : t.by_op) all += v.first;
  const int mode = profile_mode();
  std::fprintf(stderr, mode == 1   ? "\nblockinfer profile (BLOCKINFER_PROFILE=1; device synchronised per op)\n"
                       : mode == 2 ? "\nblockinfer profile (BLOCKINFER_PROFILE=events; GPU time per op, eager launches)\n"
                                   : "\nblockinfer profile (BLOCKINFER_PROFILE=steps; CUDA events around steps and "
                                     "forwards, graphs on)\n");
  std::fprintf(stderr, "%-22s %10s %10s %8s %7s\n", "op", "total ms", "calls", "us/call", "share");
  for (const auto& [name, v] : t.by_op)
    std::fprintf(stderr, "%-22s %10.1f %10ld %8.1f %6.1f%%\n", name.c_str(), 1e3 * v.first, v.second,
                 1e6 * v.first / static_cast<double>(v.second), 100.0 * v.first / (all > 0 ? all : 1));
}

}  // namespace

bool profiling_enabled() {
  static const bool enabled = [] {
    const bool on = profile_mode() != 0;
    if (on) std::atexit(report);
    return on;
  }();
  return enabled;
}

bool profiling_ops() {
  const int mode = profiling_enabled() ? profile_mode() : 0;
  return mode == 1 || mode == 2;
}

OpTimer::OpTimer(const char* name, Device device, bool coarse) : name_(name), device_(device) {
  if (!profiling_enabled() || (profile_mode() == 3 && !coarse)) return;
  on_ = true;
  if (profile_mode() >= 2) {
    if (device_.is_cuda()) event_ = cuda::event_record();
    return;
  }
  if (device_.is_cuda()) cuda::synchronize();
  start_ = now();
}

OpTimer::~OpTimer() {
  if (!on_) return;
  if (profile_mode() >= 2) {
    if (!event_) return;
    Totals& t = totals();
    void* end = cuda::event_record();
    std::lock_guard<std::mutex> lock(t.mu);
    t.pending.emplace_back(name_, event_, end);
    return;
  }
  if (device_.is_cuda()) cuda::synchronize();
  const double dt = now() - start_;
  Totals& t = totals();
  std::lock_guard<std::mutex> lock(t.mu);
  auto& v = t.by_op[name_];
  v.first += dt;
  v.second += 1;
}

}  // namespace blockinfer
