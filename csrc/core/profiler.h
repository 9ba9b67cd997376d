// Per-op wall-clock profile, enabled by BLOCKINFER_PROFILE=1: each timed scope synchronises the
// device before and after, so the times add up to the forward's (and the forward runs slower).
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
};

}  // namespace blockinfer
