// Internal: the executor's compiled graph, one Step per node that runs, in
// order, reading and writing value slots (runtime/executor.cc; rewritten by
// runtime/graph_fusion.cc before the liveness analysis).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../ops/op_kernel.h"

namespace ondevice {

struct Step {
  const onnx::Node* node = nullptr;
  std::unique_ptr<ops::OpKernel> kernel;
  std::vector<int> inputs;   // slot, or -1 for omitted
  std::vector<int> outputs;  // slot, or -1 for omitted
  std::vector<int> release;  // slots whose last reader this step is
  std::string op;
};

}  // namespace ondevice
