// A small shared pool of worker threads for data-parallel kernels.
#pragma once

#include <cstddef>
#include <functional>

namespace ondevice::detail {

// Splits [0, n) into at most `threads` contiguous ranges and runs fn(begin,
// end) on each, the calling thread taking the first range; returns when all
// ranges are done. Ranges are at least `grain` items (so small jobs stay on
// the calling thread, where a thread hand-off would cost more than it saves). Safe to call from several threads at once. Exceptions
// thrown by fn are rethrown in the caller (the first one wins).
void parallel_for(size_t n, int threads, const std::function<void(size_t, size_t)>& fn, size_t grain = 1);

}  // namespace ondevice::detail
