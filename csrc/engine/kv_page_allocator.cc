#include "engine/kv_page_allocator.h"

#include "blockinfer/status.h"

namespace blockinfer {

KVPageAllocator::KVPageAllocator(int64_t num_pages) {
  BI_CHECK_ARG(num_pages > 0 && num_pages <= INT32_MAX, "number of KV pages must be in [1, 2^31), got ",
               num_pages);
  refcount_.assign(static_cast<size_t>(num_pages), 0);
  free_.reserve(static_cast<size_t>(num_pages));
  // Pushed in reverse so that page 0 is handed out first.
  for (int64_t p = num_pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));
}

void KVPageAllocator::allocate(int64_t n, std::vector<int32_t>& pages) {
  BI_CHECK_ARG(n >= 0, "cannot allocate ", n, " pages");
  if (n > num_pages_free())
    throw OutOfMemory(str_cat("KV cache exhausted: ", n, " pages requested, ", num_pages_free(),
                              " free of ", num_pages_total()));
  for (int64_t i = 0; i < n; ++i) {
    int32_t p = free_.back();
    free_.pop_back();
    refcount_[p] = 1;
    pages.push_back(p);
  }
}

void KVPageAllocator::check_page(int32_t page) const {
  BI_CHECK(page >= 0 && page < num_pages_total(), "page ", page, " out of range");
  BI_CHECK(refcount_[page] > 0, "page ", page, " is not allocated");
}

void KVPageAllocator::incref(int32_t page) {
  check_page(page);
  ++refcount_[page];
}

void KVPageAllocator::release(std::vector<int32_t>& pages) {
  for (int32_t p : pages) {
    check_page(p);
    if (--refcount_[p] == 0) free_.push_back(p);
  }
  pages.clear();
}

int32_t KVPageAllocator::refcount(int32_t page) const {
  BI_CHECK(page >= 0 && page < num_pages_total(), "page ", page, " out of range");
  return refcount_[page];
}

}  // namespace blockinfer
