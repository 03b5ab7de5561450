// Fuzz target: the ONNX reader (parse_onnx_model: protobuf wire format,
// tensors, attributes, functions), external data resolution and the graph
// validation an Executor does at load (opsets, supported ops, value
// definitions, initializers, bit-plane matrix validation, constant folding).
//
// When the graph loads, it is also run once on small inputs made from its
// declared input types and shapes (symbolic dimensions = 2), so that the
// kernels meet whatever shapes and attributes the mutations produced.
//
// External data is resolved against the shipped model directory
// (models/nmt-en-de-bcq/onnx, or $ONDEVICE_FUZZ_MODEL_DIR), so the shipped
// graphs used as seeds find their real weights in weights.bin and a mutated
// location, offset or length goes through the real bounds checks.
// Any ondevice::Error is an accepted outcome; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/executor.h"
#include "ondevice/onnx_model.h"
#include "ondevice/tensor.h"

#ifndef ONDEVICE_FUZZ_MODEL_DIR
#define ONDEVICE_FUZZ_MODEL_DIR "models/nmt-en-de-bcq/onnx"
#endif

namespace {

using ondevice::DType;
using ondevice::Tensor;

// Feeds for every graph input without an initializer, from the declared type
// and shape; false when one cannot be made (unsupported type, unknown rank,
// or more than 4096 elements).
bool make_feeds(const ondevice::onnx::Model& model, const ondevice::Executor& ex,
                std::vector<ondevice::NamedTensor>* feeds) {
  for (const std::string& name : ex.input_names()) {
    const ondevice::onnx::ValueInfo* info = nullptr;
    for (const auto& v : model.graph.inputs)
      if (v.name == name) info = &v;
    if (info == nullptr || !info->has_shape || info->shape.size() > 6) return false;
    DType dtype;
    try {
      dtype = ondevice::dtype_from_onnx(info->elem_type);
    } catch (const ondevice::Error&) {
      return false;
    }
    ondevice::Shape shape;
    int64_t n = 1;
    for (const auto& d : info->shape) {
      const int64_t v = d.kind == ondevice::onnx::Dimension::Kind::kValue ? d.value : 2;
      if (v < 0 || v > 4096) return false;
      shape.push_back(v);
      n *= v;
      if (n > 4096) return false;
    }
    Tensor t = Tensor::allocate(dtype, shape, nullptr);
    uint8_t* bytes = static_cast<uint8_t*>(const_cast<void*>(t.raw()));
    for (int64_t i = 0; i < n; ++i) {
      switch (dtype) {
        case DType::kFloat32: t.mutable_data<float>()[i] = float(int(i % 7) - 3) * 0.25f; break;
        case DType::kInt64: t.mutable_data<int64_t>()[i] = i % 3; break;  // valid ids and indices
        case DType::kInt32: t.mutable_data<int32_t>()[i] = int32_t(i % 3); break;
        case DType::kUint8: case DType::kBool: bytes[i] = uint8_t(i % 2); break;
      }
    }
    feeds->emplace_back(name, t);
  }
  return true;
}

// ONDEVICE_FUZZ_VERBOSE=1: say how far each input got (for replaying by hand).
void note(const char* stage, const char* what) {
  static const bool verbose = std::getenv("ONDEVICE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "  %s: %s\n", stage, what);
}

const std::string& model_dir() {
  static const std::string dir = [] {
    const char* env = std::getenv("ONDEVICE_FUZZ_MODEL_DIR");
    return std::string(env != nullptr && *env ? env : ONDEVICE_FUZZ_MODEL_DIR);
  }();
  return dir;
}

}  // namespace

int fuzz_onnx_model(const uint8_t* data, size_t size) {
  // The reader keeps raw_data pointers into the buffer: it lives as long as the model.
  auto buffer = std::make_shared<std::vector<uint8_t>>(data, data + size);
  auto model = std::make_shared<ondevice::onnx::Model>();
  try {
    *model = ondevice::onnx::parse_onnx_model(buffer->data(), buffer->size(), buffer);
    (void)model->opset_version("");
    (void)model->function("ondevice", "BitPlaneMatMul");
    ondevice::onnx::resolve_external_data(model.get(), model_dir());
    // Every initializer's view (the checked accessor the ops use).
    for (const ondevice::onnx::Tensor& t : model->graph.initializers) (void)t.view();
  } catch (const ondevice::Error& e) {
    note("parse", e.what());
    return 0;
  }
  try {
    ondevice::Executor ex(model);
    (void)ex.output_names();
    std::vector<ondevice::NamedTensor> feeds;
    if (!make_feeds(*model, ex, &feeds)) {
      note("loaded", "not run (inputs of unsupported type or size)");
      return 0;
    }
    (void)ex.run(feeds);
    note("ran", "ok");
  } catch (const ondevice::Error& e) {
    note("load or run", e.what());
  }
  return 0;
}

#ifdef ONDEVICE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return fuzz_onnx_model(data, size); }
#endif
