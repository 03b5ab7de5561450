// Runtime tensors and the buffer pool (include/ondevice/tensor.h).
#include "ondevice/tensor.h"

#include <cstdint>
#include <cstdlib>
#include <new>

#include "ondevice/error.h"
#include "ondevice/onnx_model.h"

namespace ondevice {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
    case DType::kUint8: return "uint8";
    case DType::kBool: return "bool";
  }
  return "unknown";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kFloat32: return 4;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
    case DType::kUint8: return 1;
    case DType::kBool: return 1;
  }
  return 1;
}

DType dtype_from_onnx(int32_t onnx_type) {
  switch (onnx_type) {
    case onnx::kFloat: return DType::kFloat32;
    case onnx::kInt64: return DType::kInt64;
    case onnx::kInt32: return DType::kInt32;
    case onnx::kUint8: return DType::kUint8;
    case onnx::kBool: return DType::kBool;
    default:
      throw FormatError("tensor type " + onnx::data_type_name(onnx_type) +
                        " is not supported by the executor (float32, int64, int32, uint8, bool)");
  }
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ArgumentError("negative dimension in shape " + shape_string(shape));
    if (d != 0 && n > (int64_t(1) << 40) / d)
      throw ArgumentError("shape " + shape_string(shape) + " has more than 2^40 elements");
    n *= d;
  }
  return n;
}

std::string shape_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor Tensor::borrowed(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = shape_numel(shape);
  t.shape_ = std::move(shape);
  if (t.numel_ > 0 && data == nullptr) throw ArgumentError("borrowed tensor without data");
  t.data_ = data;
  t.owner_ = owner ? std::move(owner) : std::make_shared<int>(0);
  return t;
}

Tensor Tensor::allocate(DType dtype, Shape shape, BufferPool* pool) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = shape_numel(shape);  // <= 2^40, so the product below cannot overflow
  if (uint64_t(t.numel_) * dtype_size(dtype) > kMaxTensorBytes)
    throw ArgumentError("a " + std::string(dtype_name(dtype)) + " tensor of shape " + shape_string(shape) +
                        " would take " + std::to_string(uint64_t(t.numel_) * dtype_size(dtype)) +
                        " bytes, more than the limit of " + std::to_string(kMaxTensorBytes));
  t.shape_ = std::move(shape);
  const size_t bytes = std::max<size_t>(1, size_t(t.numel_) * dtype_size(dtype));
  std::shared_ptr<void> buf;
  if (pool != nullptr) {
    buf = pool->acquire(bytes);
  } else {
    void* p = ::operator new(bytes, std::align_val_t(64));
    buf = std::shared_ptr<void>(p, [](void* q) { ::operator delete(q, std::align_val_t(64)); });
  }
  t.data_ = buf.get();
  t.writable_ = true;
  t.owner_ = std::move(buf);
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  if (shape_numel(shape) != numel_)
    throw ArgumentError("cannot reshape " + shape_string(shape_) + " to " + shape_string(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::view(Shape shape, int64_t element_offset) const {
  const int64_t n = shape_numel(shape);
  if (element_offset < 0 || element_offset > numel_ || n > numel_ - element_offset)
    throw ArgumentError("a view of " + shape_string(shape) + " at element " + std::to_string(element_offset) +
                        " does not fit in " + shape_string(shape_));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.numel_ = n;
  if (data_ != nullptr) t.data_ = static_cast<const uint8_t*>(data_) + size_t(element_offset) * dtype_size(dtype_);
  t.writable_ = false;
  if (t.owner_ == nullptr) t.owner_ = std::make_shared<int>(0);  // an empty view stays defined()
  return t;
}

void Tensor::check_type(DType t) const {
  if (t != dtype_)
    throw ArgumentError(std::string("tensor holds ") + dtype_name(dtype_) + ", not " + dtype_name(t));
}

void Tensor::check_writable() const {
  if (!writable_) throw ArgumentError("tensor is a read-only view");
}

// -- BufferPool

namespace {
constexpr size_t kMinClassBytes = 64;
constexpr size_t kClasses = 48;

size_t size_class(size_t bytes) {
  size_t c = 0;
  while ((kMinClassBytes << c) < bytes) ++c;
  return c;
}
}  // namespace

std::shared_ptr<BufferPool> BufferPool::create() {
  std::shared_ptr<BufferPool> p(new BufferPool());
  p->free_.resize(kClasses);
  return p;
}

BufferPool::~BufferPool() { trim(); }

std::shared_ptr<void> BufferPool::acquire(size_t bytes) {
  const size_t c = size_class(bytes);
  if (c >= kClasses) throw ArgumentError("buffer of " + std::to_string(bytes) + " bytes is too large");
  const size_t cap = kMinClassBytes << c;
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_[c].empty()) {
      p = free_[c].back();
      free_[c].pop_back();
      stats_.reuses++;
      stats_.bytes_free -= cap;
    }
  }
  if (p == nullptr) {
    p = ::operator new(cap, std::align_val_t(64));
    std::lock_guard<std::mutex> lock(mu_);
    stats_.heap_allocations++;
    stats_.bytes_held += cap;
  }
  std::weak_ptr<BufferPool> weak = weak_from_this();
  return std::shared_ptr<void>(p, [weak, c](void* q) {
    if (auto pool = weak.lock()) {
      pool->release(q, c);
    } else {
      ::operator delete(q, std::align_val_t(64));
    }
  });
}

void BufferPool::release(void* p, size_t c) {
  std::lock_guard<std::mutex> lock(mu_);
  free_[c].push_back(p);
  stats_.bytes_free += kMinClassBytes << c;
}

BufferPool::Stats BufferPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BufferPool::trim() {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t c = 0; c < free_.size(); ++c) {
    for (void* p : free_[c]) {
      ::operator delete(p, std::align_val_t(64));
      stats_.bytes_held -= kMinClassBytes << c;
      stats_.bytes_free -= kMinClassBytes << c;
    }
    free_[c].clear();
  }
}

}  // namespace ondevice
