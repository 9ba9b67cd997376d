// Typed errors of libblockinfer. The Python bindings map them to Python exceptions:
// InvalidArgument -> ValueError, OutOfMemory -> MemoryError, NotImplementedYet ->
// NotImplementedError, CudaError and Error -> RuntimeError.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace blockinfer {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from a caller: a value out of range, a missing file, a mis-shaped weight.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// An allocation failed or a request can never fit in the configured memory.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// A documented feature that a later milestone implements.
class NotImplementedYet : public Error {
 public:
  using Error::Error;
};

// A CUDA runtime, cuBLAS or NCCL call failed.
class CudaError : public Error {
 public:
  using Error::Error;
};

// str_cat("a=", 1, ", b=", 2.5): the message builder used by every check in the library.
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

}  // namespace blockinfer

// Checks that throw a typed error whose message names what is wrong. Never use assert on input.
#define BI_CHECK_ARG(cond, ...)                                                    \
  do {                                                                             \
    if (!(cond)) throw ::blockinfer::InvalidArgument(::blockinfer::str_cat(__VA_ARGS__)); \
  } while (0)

// Internal invariants: a failure is a bug in BlockInfer, reported with the location.
#define BI_CHECK(cond, ...)                                                            \
  do {                                                                                 \
    if (!(cond))                                                                       \
      throw ::blockinfer::Error(::blockinfer::str_cat("internal error at ", __FILE__, ":", \
                                                      __LINE__, ": ", #cond, ": ",     \
                                                      ##__VA_ARGS__));                 \
  } while (0)
