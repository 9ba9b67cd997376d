// Per-op profile. BLOCKINFER_PROFILE=1: wall time, each timed scope synchronises the device
// before and after, so the times add up to the forward's (and the forward runs slower).
// BLOCKINFER_PROFILE=events: GPU time between CUDA events recorded around each op (no
// synchronisation; eager launches, so launch gaps show up in the op that waited).
// BLOCKINFER_PROFILE=steps: CUDA events around the coarse scopes only (an engine step, its
// forward, its sampling and download), CUDA graphs kept on: a step's time less the others is the
// host's share of the step.
// The summary is printed to stderr at exit. Off by default, at the cost of one branch per op.
#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer {

bool profiling_enabled();
// Per-op timers are on (BLOCKINFER_PROFILE=1 or events): CUDA graphs are then not used.
bool profiling_ops();

class OpTimer {
 public:
  // `coarse`: a scope of the steps profile (a step or a whole forward); the others time one op.
  OpTimer(const char* name, Device device, bool coarse = false);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  const char* name_;
  Device device_;
  bool on_ = false;
  double start_ = 0;
  void* event_ = nullptr;  // BLOCKINFER_PROFILE=events
};

}  // namespace blockinfer
