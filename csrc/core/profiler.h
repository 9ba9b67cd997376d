// Per-op profile. BLOCKINFER_PROFILE=1: wall time, each timed scope synchronises the device
// before and after, so the times add up to the forward's (and the forward runs slower).
// BLOCKINFER_PROFILE=events: GPU time between CUDA events recorded around each op (no
// synchronisation; eager launches, so launch gaps show up in the op that waited).
// The summary is printed to stderr at exit. Off by default, at the cost of one branch per op.
#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer {

bool profiling_enabled();

class OpTimer {
 public:
  OpTimer(const char* name, Device device);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  const char* name_;
  Device device_;
  double start_ = 0;
  void* event_ = nullptr;  // BLOCKINFER_PROFILE=events
};

}  // namespace blockinfer
