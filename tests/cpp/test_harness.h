// A minimal test harness (no external dependency): TEST(name) registers a case, EXPECT_* record
// failures, and main() prints one line per failure and the closing "N passed, N failed" line.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace bitest {

// n normal draws (mean 0, standard deviation `scale`) from a seeded mt19937: test inputs.
inline std::vector<float> randn(size_t n, unsigned seed, float scale = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct Case {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
inline int& failures_in_case() {
  static int n = 0;
  return n;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};
template <typename T>
std::string show(const T& v) {
  std::ostringstream os;
  if constexpr (requires { v.begin(); v.end(); }) {
    os << "{";
    for (auto it = v.begin(); it != v.end(); ++it) os << (it == v.begin() ? "" : ", ") << *it;
    os << "}";
  } else if constexpr (std::is_enum_v<T>) {
    os << static_cast<long long>(v);
  } else {
    os << v;
  }
  return os.str();
}
inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "  %s:%d: %s\n", file, line, what.c_str());
  ++failures_in_case();
}

}  // namespace bitest

#define TEST(name)                                                  \
  static void name();                                               \
  static ::bitest::Register name##_registration(#name, name);       \
  static void name()

#define EXPECT_TRUE(cond)                                                             \
  do {                                                                                \
    if (!(cond)) ::bitest::fail(__FILE__, __LINE__, "expected true: " #cond);         \
  } while (0)

#define EXPECT_EQ(a, b)                                                                        \
  do {                                                                                         \
    auto va_ = (a);                                                                            \
    auto vb_ = (b);                                                                            \
    if (!(va_ == vb_)) {                                                                       \
      std::ostringstream os_;                                                                  \
      os_ << "expected " #a " == " #b ", got " << ::bitest::show(va_) << " vs " << ::bitest::show(vb_);                       \
      ::bitest::fail(__FILE__, __LINE__, os_.str());                                          \
    }                                                                                          \
  } while (0)

#define EXPECT_NEAR(a, b, tol)                                                                 \
  do {                                                                                         \
    double va_ = (a), vb_ = (b);                                                               \
    if (!(std::fabs(va_ - vb_) <= (tol))) {                                                    \
      std::ostringstream os_;                                                                  \
      os_ << "expected |" #a " - " #b "| <= " << (tol) << ", got " << va_ << " vs " << vb_;   \
      ::bitest::fail(__FILE__, __LINE__, os_.str());                                          \
    }                                                                                          \
  } while (0)

// Expects `stmt` to throw exactly `Exc` (or a subclass).
#define EXPECT_THROWS(stmt, Exc)                                                         \
  do {                                                                                   \
    bool thrown_ = false;                                                                \
    try {                                                                                \
      stmt;                                                                              \
    } catch (const Exc&) {                                                               \
      thrown_ = true;                                                                    \
    } catch (...) {                                                                      \
    }                                                                                    \
    if (!thrown_) ::bitest::fail(__FILE__, __LINE__, "expected " #stmt " to throw " #Exc); \
  } while (0)

namespace bitest {
// Runs every registered case (only those whose names contain $BITEST_FILTER, where it is set) and
// prints the counts; the exit status: 1 if any failed.
inline int run_all() {
  int passed = 0, failed = 0;
  const char* only = std::getenv("BITEST_FILTER");
  for (auto& c : registry()) {
    if (only && !std::strstr(c.name, only)) continue;
    failures_in_case() = 0;
    try {
      c.fn();
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, std::string("uncaught: ") + e.what());
    }
    if (failures_in_case()) {
      std::fprintf(stderr, "FAILED %s\n", c.name);
      ++failed;
    } else {
      ++passed;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
}  // namespace bitest

#define BITEST_MAIN() \
  int main() { return ::bitest::run_all(); }
