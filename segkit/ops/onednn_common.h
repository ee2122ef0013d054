// What segkit's oneDNN operators share: the CPU engine and stream, Paddle buffers as oneDNN memory,
// reorders between Paddle's plain layouts and the layouts a primitive wants, and a cache of
// primitives per geometry (creating a primitive costs far more than running a small one).

#ifndef SEGKIT_OPS_ONEDNN_COMMON_H_
#define SEGKIT_OPS_ONEDNN_COMMON_H_

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

namespace segkit {

using dnnl::memory;
using Dims = memory::dims;
using Tag = memory::format_tag;
using Ints = std::vector<int>;

inline dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

inline dnnl::stream& cpu_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

inline memory::desc any_layout(const Dims& dims) { return memory::desc(dims, memory::data_type::f32, Tag::any); }

inline memory::desc plain_layout(const Dims& dims, Tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

// A float32 tensor's buffer as oneDNN memory in Paddle's plain layout.
inline memory wrap(const Dims& dims, Tag tag, const paddle::Tensor& t) {
  return memory(plain_layout(dims, tag), cpu_engine(), const_cast<float*>(t.data<float>()));
}

// ``user`` in the layout a primitive wants: the same buffer, or a reordered copy.
inline memory as_layout(const memory::desc& wanted, const memory& user) {
  if (wanted == user.get_desc()) return user;
  memory copy(wanted, cpu_engine());
  dnnl::reorder(user, copy).execute(cpu_stream(), const_cast<memory&>(user), copy);
  return copy;
}

// Memory for a primitive's output: the user's buffer when the layouts agree, else a scratch buffer.
inline memory output_for(const memory::desc& wanted, const memory& user) {
  return wanted == user.get_desc() ? user : memory(wanted, cpu_engine());
}

inline void copy_back(const memory& produced, memory& user) {
  if (produced.get_desc() == user.get_desc()) return;
  dnnl::reorder(produced, user).execute(cpu_stream(), const_cast<memory&>(produced), user);
}

// "d0,d1,...;" for cache keys.
inline std::string dims_key(const Dims& dims) {
  std::string key;
  for (int64_t d : dims) key += std::to_string(d) + ",";
  return key + ";";
}

inline void check_float_cpu(const paddle::Tensor& t, const char* op) {
  PD_CHECK(t.is_cpu() && t.dtype() == paddle::DataType::FLOAT32, op, ": float32 CPU tensors only");
}

// ``slot``'s primitive, made by ``make`` on first use: backward primitives, which inference never needs
// (creating one compiles its kernel).
template <typename P, typename Make>
P& made_once(std::unique_ptr<P>& slot, Make make) {
  if (!slot) slot.reset(new P(make()));
  return *slot;
}

// Primitives of type T by geometry key, made by ``make`` on first use. Emptied when full (e.g. whole
// images of many sizes), so memory stays bounded.
template <typename T>
class PrimitiveCache {
 public:
  template <typename Make>
  T& get(const std::string& key, Make make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = cache_.find(key);
    if (found == cache_.end()) {
      if (cache_.size() >= kMaxEntries) cache_.clear();
      found = cache_.emplace(key, std::unique_ptr<T>(make())).first;
    }
    return *found->second;
  }

 private:
  static constexpr size_t kMaxEntries = 512;
  std::mutex mutex_;
  std::unordered_map<std::string, std::unique_ptr<T>> cache_;
};

}  // namespace segkit

#endif  // SEGKIT_OPS_ONEDNN_COMMON_H_
