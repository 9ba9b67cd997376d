// Memory-mapped reader of *.safetensors checkpoints: one file, or shards listed by
// model.safetensors.index.json. Tensors come back as CPU views into the mapping (no copy).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blockinfer/tensor.h"

namespace blockinfer {

class MappedFile;

struct TensorRecord {
  std::shared_ptr<MappedFile> file;
  DType dtype;
  std::vector<int64_t> shape;
  size_t offset;  // from the start of the file
  size_t nbytes;
};

class CheckpointReader {
 public:
  // Opens `dir`/model.safetensors.index.json when present, else every *.safetensors in `dir`.
  // Throws InvalidArgument when there is none, or a file or its header is malformed.
  explicit CheckpointReader(const std::string& dir);

  bool contains(const std::string& name) const { return records_.count(name) > 0; }
  const TensorRecord& record(const std::string& name) const;
  std::vector<std::string> names() const;
  // A CPU view of the stored tensor (its own dtype); keeps the mapping alive.
  Tensor view(const std::string& name) const;

 private:
  std::map<std::string, TensorRecord> records_;
};

// Reads one file's header (exposed for tests).
std::map<std::string, TensorRecord> read_safetensors_header(const std::string& path);

}  // namespace blockinfer
