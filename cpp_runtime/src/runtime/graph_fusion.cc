// Step rewrites (graph_fusion.h).
#include "graph_fusion.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>

namespace ondevice {
namespace {

// Which step computes each slot, and how many inputs read it (graph outputs
// count as two readers, so that they are never fused away).
struct Uses {
  std::map<int, size_t> producer;
  std::map<int, int> readers;
  Uses(const std::vector<Step>& steps, const std::vector<int>& output_slots) {
    for (size_t i = 0; i < steps.size(); ++i) {
      for (int s : steps[i].outputs)
        if (s >= 0) producer[s] = i;
      for (int s : steps[i].inputs)
        if (s >= 0) readers[s]++;
    }
    for (int s : output_slots) readers[s] += 2;
  }
  // The step that makes `slot`, if its op is `op` and `slot` has one reader.
  Step* sole_product(std::vector<Step>& steps, int slot, const char* op) {
    auto p = producer.find(slot);
    if (p == producer.end() || readers[slot] != 1) return nullptr;
    Step& st = steps[p->second];
    return st.op == op ? &st : nullptr;
  }
};

// Removes the steps marked in `drop`.
void drop_steps(std::vector<Step>& steps, const std::vector<bool>& drop) {
  std::vector<Step> kept;
  kept.reserve(steps.size());
  for (size_t i = 0; i < steps.size(); ++i)
    if (!drop[i]) kept.push_back(std::move(steps[i]));
  steps = std::move(kept);
}

// The single int64 value of a constant 1-element tensor, or false.
bool constant_scalar(const std::vector<Tensor>& constants, const std::vector<bool>& is_constant, int slot,
                     int64_t& v) {
  if (slot < 0 || !is_constant[size_t(slot)]) return false;
  const Tensor& t = constants[size_t(slot)];
  if (t.numel() != 1) return false;
  if (t.dtype() == DType::kInt64) v = t.data<int64_t>()[0];
  else if (t.dtype() == DType::kInt32) v = t.data<int32_t>()[0];
  else return false;
  return true;
}

}  // namespace

size_t fuse_frame_windows(std::vector<Step>& steps, const std::vector<Tensor>& constants,
                          const std::vector<bool>& is_constant, const std::vector<int>& output_slots) {
  Uses uses(steps, output_slots);
  auto sole_product = [&](int slot, const char* op) { return uses.sole_product(steps, slot, op); };
  std::vector<bool> drop(steps.size(), false);
  size_t fused = 0;
  for (size_t m = 0; m < steps.size(); ++m) {
    Step& mm = steps[m];
    if (mm.op != "ondevice.BitPlaneMatMul" || mm.inputs.empty() || mm.inputs[0] < 0) continue;
    Step* concat = sole_product(mm.inputs[0], "Concat");
    if (concat == nullptr || ops::attr_int(*concat->node, "axis", 0) != -1) continue;
    const size_t n = concat->inputs.size();
    if (n < 2) continue;
    std::vector<Step*> slices;
    int frames = -1;
    for (size_t i = 0; i < n; ++i) {
      Step* sl = concat->inputs[i] < 0 ? nullptr : sole_product(concat->inputs[i], "Slice");
      if (sl == nullptr || sl->inputs.size() < 4 || sl->inputs[0] < 0) break;
      if (frames >= 0 && sl->inputs[0] != frames) break;
      frames = sl->inputs[0];
      int64_t start, end, axis, step = 1;
      if (!constant_scalar(constants, is_constant, sl->inputs[1], start) ||
          !constant_scalar(constants, is_constant, sl->inputs[2], end) ||
          !constant_scalar(constants, is_constant, sl->inputs[3], axis))
        break;
      if (sl->inputs.size() > 4 && sl->inputs[4] >= 0 && !constant_scalar(constants, is_constant, sl->inputs[4], step))
        break;
      const bool last = i + 1 == n;
      const bool end_ok = last ? end >= std::numeric_limits<int32_t>::max() : end == int64_t(i) - int64_t(n - 1);
      if (axis != 1 || step != 1 || start != int64_t(i) || !end_ok) break;
      slices.push_back(sl);
    }
    if (slices.size() != n) continue;

    ops::FrameWindowParts parts;
    parts.window = n;
    for (Step* sl : slices) {
      ops::OpInputs in;
      for (int s : sl->inputs) in.push_back(s >= 0 && is_constant[size_t(s)] ? &constants[size_t(s)] : nullptr);
      in[0] = nullptr;  // Y, at run time
      parts.slice_inputs.push_back(std::move(in));
      parts.slices.push_back(std::move(sl->kernel));
      drop[size_t(sl - steps.data())] = true;
    }
    parts.concat = std::move(concat->kernel);
    drop[size_t(concat - steps.data())] = true;
    mm.kernel = ops::make_frame_window_matmul(*mm.node, std::move(mm.kernel), std::move(parts));
    mm.inputs[0] = frames;
    mm.op = "ondevice.BitPlaneMatMul (frame windows)";
    ++fused;
  }
  if (fused > 0) drop_steps(steps, drop);
  return fused;
}

size_t fuse_layer_norm_relu(std::vector<Step>& steps, const std::vector<int>& output_slots) {
  Uses uses(steps, output_slots);
  std::vector<bool> drop(steps.size(), false);
  size_t fused = 0;
  for (size_t r = 0; r < steps.size(); ++r) {
    Step& relu = steps[r];
    if (relu.op != "Relu" || relu.inputs.size() != 1 || relu.inputs[0] < 0 || relu.outputs.size() != 1) continue;
    Step* ln = uses.sole_product(steps, relu.inputs[0], "LayerNormalization");
    if (ln == nullptr || ln->outputs.empty() || !ops::fuse_relu_into_layer_norm(*ln->kernel)) continue;
    ln->outputs = {relu.outputs[0]};  // the Mean / InvStdDev outputs are refused by the kernel
    ln->op = "LayerNormalization + Relu";
    drop[r] = true;
    ++fused;
  }
  if (fused > 0) drop_steps(steps, drop);
  return fused;
}

}  // namespace ondevice
