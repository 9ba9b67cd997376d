#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace blockinfer {

namespace fs = std::filesystem;
using json = nlohmann::json;

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    BI_CHECK_ARG(fd >= 0, "cannot open checkpoint file ", path, ": ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      throw InvalidArgument(str_cat("cannot stat ", path));
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data_ == MAP_FAILED) {
        ::close(fd);
        throw InvalidArgument(str_cat("cannot mmap ", path, ": ", std::strerror(errno)));
      }
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
  }
  const char* data() const { return static_cast<const char*>(data_); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

namespace {

DType parse_st_dtype(const std::string& s, const std::string& name, const std::string& path) {
  if (s == "F32") return DType::kFloat32;
  if (s == "F16") return DType::kFloat16;
  if (s == "BF16") return DType::kBFloat16;
  if (s == "I32") return DType::kInt32;
  if (s == "I64") return DType::kInt64;
  if (s == "U8") return DType::kUInt8;
  throw InvalidArgument(str_cat(path, ": tensor '", name, "' has unsupported dtype ", s));
}

std::map<std::string, TensorRecord> parse_file(const std::shared_ptr<MappedFile>& file) {
  const std::string& path = file->path();
  BI_CHECK_ARG(file->size() >= 8, path, " is too small to be a safetensors file");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file->data(), 8);  // little-endian u64 (every supported host is LE)
  BI_CHECK_ARG(header_len <= file->size() - 8, path, ": header length ", header_len,
               " exceeds the file size ", file->size());
  json header;
  try {
    header = json::parse(file->data() + 8, file->data() + 8 + header_len);
  } catch (const json::exception& e) {
    throw InvalidArgument(str_cat(path, ": malformed safetensors header: ", e.what()));
  }
  BI_CHECK_ARG(header.is_object(), path, ": safetensors header is not a JSON object");
  const size_t data_start = 8 + header_len;
  std::map<std::string, TensorRecord> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& e = it.value();
    try {
      TensorRecord r;
      r.file = file;
      r.dtype = parse_st_dtype(e.at("dtype").get<std::string>(), it.key(), path);
      r.shape = e.at("shape").get<std::vector<int64_t>>();
      auto offs = e.at("data_offsets").get<std::vector<uint64_t>>();
      BI_CHECK_ARG(offs.size() == 2 && offs[0] <= offs[1], path, ": tensor '", it.key(),
                   "' has bad data_offsets");
      int64_t numel = 1;
      for (auto d : r.shape) {
        BI_CHECK_ARG(d >= 0, path, ": tensor '", it.key(), "' has a negative dimension");
        numel *= d;
      }
      r.offset = data_start + offs[0];
      r.nbytes = offs[1] - offs[0];
      BI_CHECK_ARG(r.nbytes == static_cast<size_t>(numel) * dtype_size(r.dtype), path, ": tensor '",
                   it.key(), "' has ", r.nbytes, " bytes for shape of ", numel, " elements");
      BI_CHECK_ARG(r.offset + r.nbytes <= file->size(), path, ": tensor '", it.key(),
                   "' extends past the end of the file");
      out.emplace(it.key(), std::move(r));
    } catch (const json::exception& ex) {
      throw InvalidArgument(str_cat(path, ": malformed entry for tensor '", it.key(), "': ", ex.what()));
    }
  }
  return out;
}

}  // namespace

std::map<std::string, TensorRecord> read_safetensors_header(const std::string& path) {
  return parse_file(std::make_shared<MappedFile>(path));
}

CheckpointReader::CheckpointReader(const std::string& dir) {
  const fs::path root(dir);
  BI_CHECK_ARG(fs::is_directory(root), "model directory '", dir, "' does not exist");
  std::vector<fs::path> files;
  const fs::path index = root / "model.safetensors.index.json";
  if (fs::is_regular_file(index)) {
    json j;
    try {
      std::ifstream f(index);
      j = json::parse(f);
    } catch (const json::exception& e) {
      throw InvalidArgument(str_cat(index.string(), " is not valid JSON: ", e.what()));
    }
    BI_CHECK_ARG(j.contains("weight_map") && j["weight_map"].is_object(), index.string(),
                 " has no weight_map");
    std::set<std::string> shard_names;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it)
      shard_names.insert(it.value().get<std::string>());
    for (const auto& s : shard_names) {
      BI_CHECK_ARG(fs::is_regular_file(root / s), index.string(), " names shard ", s,
                   " which does not exist");
      files.push_back(root / s);
    }
    std::map<std::string, std::string> where;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it)
      where[it.key()] = it.value().get<std::string>();
    for (const auto& f : files) {
      for (auto& [name, rec] : parse_file(std::make_shared<MappedFile>(f.string()))) {
        auto w = where.find(name);
        BI_CHECK_ARG(w != where.end() && root / w->second == f, f.string(), " holds tensor '", name,
                     "' which the index does not map to this shard");
        records_.emplace(name, std::move(rec));
      }
    }
    for (const auto& [name, shard] : where)
      BI_CHECK_ARG(records_.count(name), index.string(), " maps tensor '", name, "' to ", shard,
                   " but that shard does not contain it");
  } else {
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    BI_CHECK_ARG(!files.empty(), "model directory '", dir, "' has no *.safetensors files");
    for (const auto& f : files) {
      for (auto& [name, rec] : parse_file(std::make_shared<MappedFile>(f.string()))) {
        BI_CHECK_ARG(!records_.count(name), "tensor '", name, "' appears in more than one file");
        records_.emplace(name, std::move(rec));
      }
    }
  }
}

const TensorRecord& CheckpointReader::record(const std::string& name) const {
  auto it = records_.find(name);
  BI_CHECK_ARG(it != records_.end(), "checkpoint has no tensor '", name, "'");
  return it->second;
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : records_) out.push_back(n);
  return out;
}

Tensor CheckpointReader::view(const std::string& name) const {
  const TensorRecord& r = record(name);
  void* p = const_cast<char*>(r.file->data() + r.offset);
  return Tensor::from_blob(p, r.shape, r.dtype, Device::cpu(), {}, r.file);
}

}  // namespace blockinfer
