// The graph executor: runs the ONNX graphs the exporter writes.
//
// It executes the operator set `ondevice export` emits for the NMT model plus the
// ops the speech-understanding export needs (Slice, ArgMax, Sub, Div, ReduceMean, Sqrt; see
// supported_ops(); tests/test_native_runtime.py checks it covers both) and
// rejects any other graph at load time, naming the first unsupported node. The bit-plane
// ops of the `ondevice` domain run on the LUT kernels (bcq_gemm.h) over the
// memory-mapped planes; their ONNX function bodies are not executed.
//
// At load the executor
//   * binds initializers (and graph inputs that an initializer of the same name
//     backs: the exporter declares the packed weights as inputs too) as
//     constants that borrow the mapped file,
//   * validates every bit-plane matrix once (sizes, zero padding, finite scales),
//   * folds nodes whose inputs are all constants (e.g. transposed fp32 weights),
//   * records for every value the last node that reads it, so a buffer goes
//     back to the executor's pool as soon as its last reader has run.
// run() is const and may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ondevice/bcq_gemm.h"
#include "ondevice/onnx_model.h"
#include "ondevice/tensor.h"

namespace ondevice {

struct ExecutorOptions {
  int threads = 1;  // threads for the kernels of one run() call
  BitplaneKernel kernel;
  // Rewrite node patterns into steps that compute the same values with less
  // work (src/runtime/graph_fusion.h: a strided convolution's Slice/Concat/
  // BitPlaneMatMul reads its frame windows in place). false runs every node as
  // written, for tests and benchmarks that compare the two; the default is
  // true unless the environment sets ONDEVICE_FUSE=0.
  bool fuse = default_fuse();
  static bool default_fuse();
};

using NamedTensor = std::pair<std::string, Tensor>;

class Executor {
 public:
  // Throws FormatError for graphs outside the supported subset (unknown op,
  // non-constant weights of a bit-plane op, invalid matrices, cycles, ...).
  Executor(std::shared_ptr<const onnx::Model> model, ExecutorOptions options = ExecutorOptions());
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;

  // Loads `path` (external data memory-mapped) and prepares it.
  static Executor load(const std::string& path, ExecutorOptions options = ExecutorOptions());

  // Inputs the caller must feed (graph inputs without an initializer), in graph order.
  const std::vector<std::string>& input_names() const;
  const std::vector<std::string>& output_names() const;

  // Runs the graph. `feeds` must name every input of input_names() once, with
  // the declared element type and rank; ArgumentError otherwise (also for
  // shape mismatches inside the graph). Returns the outputs in
  // output_names() order.
  std::vector<Tensor> run(const std::vector<NamedTensor>& feeds) const;

  void set_threads(int threads);
  int threads() const;
  BufferPool::Stats pool_stats() const;
  // Frees the pool's idle buffers (e.g. an encoder's after each batch: its
  // activations are sized by the source, and the decoder never reuses them).
  void trim_pool() const;

  // Per-op time of the runs since the last reset, when profiling is on
  // (ONDEVICE_PROFILE=1 in the environment at load, or enable_profiling()).
  struct OpTime {
    std::string op;
    uint64_t calls = 0;
    double seconds = 0;
  };
  void enable_profiling(bool on);
  std::vector<OpTime> profile() const;
  void reset_profile();

  // The operators this executor runs, as "Op" (default domain) or "domain.Op".
  static std::vector<std::string> supported_ops();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ondevice
