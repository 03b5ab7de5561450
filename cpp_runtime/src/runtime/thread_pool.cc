#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <pthread.h>
#include <mutex>
#include <thread>
#include <vector>

namespace ondevice::detail {
namespace {

// One parallel_for call: its remaining ranges are queued as tasks; the
// caller waits until `pending` reaches zero.
struct Job {
  const std::function<void(size_t, size_t)>* fn;
  std::mutex mu;
  std::condition_variable done;
  std::atomic<size_t> pending{0};
  std::exception_ptr error;
};

struct Task {
  std::shared_ptr<Job> job;
  size_t begin, end;
};

class Pool;
Pool* g_pool = nullptr;
std::mutex* g_pool_mu = new std::mutex;  // never destroyed: usable during exit

// After fork() the child has none of the parent's worker threads (and the
// pool's mutexes may be held by threads that no longer exist): forget the
// old pool, leaking it on purpose, and build a fresh one on first use.
void reset_pool_in_child() {
  g_pool = nullptr;
  g_pool_mu = new std::mutex;
}

class Pool {
 public:
  // The pool lives for the whole process (never destroyed, so no worker is
  // joined during static destruction).
  static Pool& instance() {
    std::lock_guard<std::mutex> lock(*g_pool_mu);
    if (g_pool == nullptr) {
      static bool registered = (pthread_atfork(nullptr, nullptr, reset_pool_in_child), true);
      (void)registered;
      g_pool = new Pool;
    }
    return *g_pool;
  }

  // Grows the pool so that `workers` threads exist (never shrinks).
  void ensure_workers(size_t workers) {
    std::lock_guard<std::mutex> lock(mu_);
    while (threads_.size() < workers) {
      threads_.emplace_back([this] { loop(); });
      threads_.back().detach();
    }
  }

  void submit(Task task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(task));
      queued_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_one();
  }

  static void run(const Task& task) {
    try {
      (*task.job->fn)(task.begin, task.end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(task.job->mu);
      if (!task.job->error) task.job->error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(task.job->mu);
    if (task.job->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) task.job->done.notify_all();
  }

 private:
  void loop() {
    for (;;) {
      // Kernel calls come in quick succession (one per layer): spinning
      // briefly before sleeping saves the futex wake-up latency, which is
      // comparable to a whole GEMV on a small matrix.
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      while (queued_.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < spin_until) {
        for (int i = 0; i < 64; ++i) std::this_thread::yield();
      }
      Task task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        task = std::move(queue_.front());
        queue_.pop_front();
        queued_.fetch_sub(1, std::memory_order_relaxed);
      }
      run(task);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  std::atomic<size_t> queued_{0};
  std::vector<std::thread> threads_;
};

}  // namespace

void parallel_for(size_t n, int threads, const std::function<void(size_t, size_t)>& fn, size_t grain) {
  if (n == 0) return;
  const size_t parts = std::min<size_t>(std::max<size_t>(1, n / std::max<size_t>(grain, 1)), size_t(std::max(threads, 1)));
  if (parts == 1) {
    fn(0, n);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->pending = parts;
  Pool& pool = Pool::instance();
  pool.ensure_workers(parts - 1);
  auto bound = [&](size_t p) { return n * p / parts; };
  size_t submitted = 1;
  try {
    for (; submitted < parts; ++submitted) pool.submit({job, bound(submitted), bound(submitted + 1)});
  } catch (...) {
    // Could not queue (out of memory): the ranges not handed out run here, and
    // we still wait below for those that were, so fn outlives every task.
  }
  for (size_t p = submitted; p < parts; ++p) Pool::run({job, bound(p), bound(p + 1)});
  Pool::run({job, 0, bound(1)});
  // Spin briefly (the other ranges usually finish about when ours does),
  // then sleep: a futex wake-up costs tens of microseconds on a VM.
  const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
  while (job->pending.load(std::memory_order_acquire) != 0 && std::chrono::steady_clock::now() < spin_until)
    std::this_thread::yield();
  std::unique_lock<std::mutex> lock(job->mu);
  job->done.wait(lock, [&] { return job->pending.load(std::memory_order_acquire) == 0; });
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace ondevice::detail
