#include "engine/remasking.h"

namespace blockinfer {

int32_t num_to_unmask(int32_t block_len, int32_t steps, int32_t step) {
  return block_len / steps + (step < block_len % steps ? 1 : 0);
}

}  // namespace blockinfer
