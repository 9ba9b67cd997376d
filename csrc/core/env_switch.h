#pragma once

#include <cstdlib>
#include <string>

#include "blockinfer/status.h"

namespace blockinfer {

// A 0/1 switch from the environment (A/B runs of a kernel form): -1 where `name` is unset, else 0
// or 1; any other value, the empty string included, is an InvalidArgument naming the variable.
inline int env_switch(const char* name) {
  const char* env = std::getenv(name);
  if (env == nullptr) return -1;
  const std::string v = env;
  BI_CHECK_ARG(v == "0" || v == "1", name, " is '", v, "'; it must be 0 or 1 (or unset)");
  return v == "1" ? 1 : 0;
}

}  // namespace blockinfer
