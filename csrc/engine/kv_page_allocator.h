// Fixed-size KV pages with reference counts. A page returns to the free list when its count drops
// to zero. Counts > 1 let later prefix sharing map one page into several sequences.
#pragma once

#include <cstdint>
#include <vector>

namespace blockinfer {

class KVPageAllocator {
 public:
  explicit KVPageAllocator(int64_t num_pages);

  int64_t num_pages_total() const { return static_cast<int64_t>(refcount_.size()); }
  int64_t num_pages_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_pages_used() const { return num_pages_total() - num_pages_free(); }
  bool can_allocate(int64_t n) const { return n <= num_pages_free(); }

  // Appends n fresh pages (refcount 1) to `pages`; throws OutOfMemory when fewer are free.
  void allocate(int64_t n, std::vector<int32_t>& pages);
  void incref(int32_t page);
  // Drops one reference to each page and clears `pages`.
  void release(std::vector<int32_t>& pages);
  int32_t refcount(int32_t page) const;

 private:
  void check_page(int32_t page) const;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;  // a stack: the most recently freed page is reused first
};

}  // namespace blockinfer
