// Internal: rewrites of the executor's steps that compute the same values with
// less work. Each one matches a pattern exactly (operators, constant inputs,
// single readers) and leaves everything else as it is.
#pragma once

#include <vector>

#include "graph_steps.h"
#include "ondevice/tensor.h"

namespace ondevice {

// Slice x n -> Concat(axis -1) -> BitPlaneMatMul, the exporter's strided
// convolution over frames (export/README.md), becomes one step that reads the
// n-frame windows in place (ops::make_frame_window_matmul). Matches only when
// Slice i takes [i, i - n + 1) of axis 1 (the last one to the end) of one
// value Y with constant starts / ends / axes and no steps other than 1, and
// when the Slices' and the Concat's outputs have no other reader and are not
// graph outputs. `constants[s]` is slot s's constant value (if is_constant[s]).
// Returns the number of convolutions fused.
size_t fuse_frame_windows(std::vector<Step>& steps, const std::vector<Tensor>& constants,
                          const std::vector<bool>& is_constant, const std::vector<int>& output_slots);

// LayerNormalization -> Relu becomes one step that normalizes and clamps in
// one pass (ops::fuse_relu_into_layer_norm): the speech model's feature
// encoder has one per convolution. Matches when the normalization's output
// has the Relu as its only reader and is not a graph output. Returns the
// number of pairs fused.
size_t fuse_layer_norm_relu(std::vector<Step>& steps, const std::vector<int>& output_slots);

}  // namespace ondevice
