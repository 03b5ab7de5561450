// Runtime tensors of the graph executor and the pool their buffers come from.
//
// A Tensor is a dense, row-major array with a data type and a shape. Its bytes
// are either borrowed (a weight inside a memory-mapped file, kept alive by an
// owner handle) or held in a buffer taken from a BufferPool. When the last
// Tensor referring to a pooled buffer goes away, the buffer returns to its
// pool instead of the heap, so a decoder that runs the same graph step after
// step reuses the same few buffers and its memory stays flat.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ondevice {

// The element types the executor computes with (a subset of ONNX's).
enum class DType : uint8_t { kFloat32, kInt64, kInt32, kUint8, kBool };

const char* dtype_name(DType t);
size_t dtype_size(DType t);
// The DType of an ONNX TensorProto.DataType; throws FormatError for types the
// executor does not compute with.
DType dtype_from_onnx(int32_t onnx_type);

using Shape = std::vector<int64_t>;

// Product of the dimensions (1 for a scalar); throws ArgumentError on negative
// dimensions or a product beyond 2^40 elements.
int64_t shape_numel(const Shape& shape);
std::string shape_string(const Shape& shape);

// The largest buffer Tensor::allocate() hands out. The models this runtime runs
// need at most a few hundred MiB for their largest tensor (attention scores and
// logits of a full batch); without a bound, a hostile graph of a few hundred
// bytes (a Pad, a broadcast or a Reshape of constants with huge sizes, folded
// at load or computed per call) could ask for up to 2^40 elements: an
// allocation that fails as std::bad_alloc, or one that succeeds and exhausts
// the device's memory.
inline constexpr uint64_t kMaxTensorBytes = uint64_t(1) << 30;

class BufferPool;

class Tensor {
 public:
  Tensor() = default;
  // A view of bytes that `owner` keeps alive; the tensor never writes them.
  static Tensor borrowed(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner);
  // Fresh, uninitialized storage from `pool` (or the heap when pool is null);
  // ArgumentError if it would take more than kMaxTensorBytes.
  static Tensor allocate(DType dtype, Shape shape, BufferPool* pool);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_[i]; }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return size_t(numel_) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || (numel_ == 0 && owner_ != nullptr); }

  // Checked element access: throws ArgumentError when T does not match dtype().
  template <typename T>
  const T* data() const {
    check_type(type_of<T>());
    return static_cast<const T*>(data_);
  }
  // Writable data: only for tensors made by allocate() (throws for borrowed ones).
  template <typename T>
  T* mutable_data() {
    check_type(type_of<T>());
    check_writable();
    return static_cast<T*>(const_cast<void*>(data_));
  }
  const void* raw() const { return data_; }

  // The same bytes under another shape with the same element count (no copy).
  Tensor reshaped(Shape shape) const;
  // A read-only view of `shape`'s elements starting `element_offset` elements
  // into this tensor's data (no copy; keeps the buffer alive). ArgumentError
  // unless the range lies inside this tensor.
  Tensor view(Shape shape, int64_t element_offset) const;

 private:
  template <typename T>
  static DType type_of();
  void check_type(DType t) const;
  void check_writable() const;

  DType dtype_ = DType::kFloat32;
  Shape shape_;
  int64_t numel_ = 0;
  const void* data_ = nullptr;
  bool writable_ = false;
  std::shared_ptr<const void> owner_;
};

template <> inline DType Tensor::type_of<float>() { return DType::kFloat32; }
template <> inline DType Tensor::type_of<int64_t>() { return DType::kInt64; }
template <> inline DType Tensor::type_of<int32_t>() { return DType::kInt32; }
template <> inline DType Tensor::type_of<uint8_t>() { return DType::kUint8; }
template <> inline DType Tensor::type_of<bool>() { return DType::kBool; }

// Free buffers kept by size class (powers of two from 64 bytes), shared by
// the tensors of one executor. Thread-safe. Statistics let tests check that
// steady-state decoding allocates nothing new.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  static std::shared_ptr<BufferPool> create();
  ~BufferPool();

  // A buffer of at least `bytes` bytes, 64-byte aligned; returned to this pool
  // when the returned handle's last copy is destroyed (even after the pool
  // itself is gone: then it is freed).
  std::shared_ptr<void> acquire(size_t bytes);

  struct Stats {
    uint64_t heap_allocations = 0;  // buffers ever obtained from the heap
    uint64_t reuses = 0;            // acquisitions served from the free lists
    uint64_t bytes_held = 0;        // bytes of all buffers the pool has created and not freed
    uint64_t bytes_free = 0;        // of which currently in the free lists
  };
  Stats stats() const;
  // Frees every buffer in the free lists (buffers in use are unaffected).
  void trim();

 private:
  BufferPool() = default;
  void release(void* p, size_t size_class);

  mutable std::mutex mu_;
  std::vector<std::vector<void*>> free_;  // by size class
  Stats stats_;
};

}  // namespace ondevice
