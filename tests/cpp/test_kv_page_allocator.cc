#include <algorithm>
#include <set>

#include "blockinfer/status.h"
#include "engine/kv_page_allocator.h"
#include "test_harness.h"

using namespace blockinfer;

TEST(allocates_distinct_pages_until_exhausted) {
  KVPageAllocator a(8);
  std::vector<int32_t> p;
  a.allocate(5, p);
  a.allocate(3, p);
  EXPECT_EQ(p.size(), size_t{8});
  EXPECT_EQ(std::set<int32_t>(p.begin(), p.end()).size(), size_t{8});
  EXPECT_EQ(a.num_pages_free(), 0);
  EXPECT_TRUE(!a.can_allocate(1));
  std::vector<int32_t> q;
  EXPECT_THROWS(a.allocate(1, q), OutOfMemory);
  EXPECT_TRUE(q.empty());
}

TEST(release_returns_pages_and_clears_the_list) {
  KVPageAllocator a(4);
  std::vector<int32_t> p;
  a.allocate(4, p);
  a.release(p);
  EXPECT_TRUE(p.empty());
  EXPECT_EQ(a.num_pages_free(), 4);
  EXPECT_EQ(a.num_pages_used(), 0);
}

TEST(refcounts_keep_shared_pages_until_the_last_release) {
  KVPageAllocator a(4);
  std::vector<int32_t> owner;
  a.allocate(2, owner);
  std::vector<int32_t> sharer = owner;
  for (int32_t page : sharer) a.incref(page);
  EXPECT_EQ(a.refcount(owner[0]), 2);
  a.release(owner);
  EXPECT_EQ(a.num_pages_free(), 2);  // still held by the sharer
  EXPECT_EQ(a.refcount(sharer[0]), 1);
  a.release(sharer);
  EXPECT_EQ(a.num_pages_free(), 4);
}

TEST(double_free_and_bad_pages_are_internal_errors) {
  KVPageAllocator a(2);
  std::vector<int32_t> p;
  a.allocate(1, p);
  std::vector<int32_t> copy = p;
  a.release(p);
  EXPECT_THROWS(a.release(copy), Error);
  EXPECT_THROWS(a.incref(7), Error);
  EXPECT_THROWS(KVPageAllocator(0), InvalidArgument);
}

TEST(churn_never_leaks) {
  KVPageAllocator a(64);
  std::vector<std::vector<int32_t>> owners(10);
  unsigned state = 1;
  for (int it = 0; it < 2000; ++it) {
    state = state * 1103515245u + 12345u;
    auto& o = owners[(state >> 8) % owners.size()];
    const int64_t n = (state >> 16) % 9;
    if ((state >> 4) & 1) {
      if (a.can_allocate(n)) a.allocate(n, o);
    } else {
      a.release(o);
    }
    int64_t held = 0;
    for (auto& x : owners) held += static_cast<int64_t>(x.size());
    EXPECT_EQ(held + a.num_pages_free(), 64);
  }
  for (auto& o : owners) a.release(o);
  EXPECT_EQ(a.num_pages_free(), 64);
}

BITEST_MAIN()
