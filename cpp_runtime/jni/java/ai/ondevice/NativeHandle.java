package ai.ondevice;

import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * The native object behind a {@link Translator} or an {@link Understander}: a pointer that calls
 * read under a shared lock and {@link #close()} frees once under the exclusive lock, so any number
 * of threads may call at once, and {@code close()} waits for calls in progress and is idempotent.
 * Package-private: the public classes own one each and keep their own documented API.
 */
final class NativeHandle {
  /** Frees a native pointer (the owner's {@code nativeDestroy}). */
  interface Destroyer {
    void destroy(long handle);
  }

  /** A native call on the live pointer. */
  interface Call<T> {
    T apply(long handle);
  }

  private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
  private final String owner;
  private final Destroyer destroyer;
  private long handle; // 0 once closed. Guarded by lock.

  /**
   * @param handle a live native pointer, now owned by this object
   * @param owner the owning class's name, for the "closed" message
   */
  NativeHandle(long handle, String owner, Destroyer destroyer) {
    this.owner = owner;
    this.destroyer = destroyer;
    lock.writeLock().lock();
    try {
      this.handle = handle;
    } finally {
      lock.writeLock().unlock();
    }
  }

  /**
   * Runs {@code call} on the pointer under the shared lock.
   *
   * @throws IllegalStateException after {@link #close()}
   */
  <T> T call(Call<T> call) {
    Lock read = lock.readLock();
    read.lock();
    try {
      if (handle == 0) {
        throw new IllegalStateException("this " + owner + " is closed");
      }
      return call.apply(handle);
    } finally {
      read.unlock();
    }
  }

  boolean isClosed() {
    Lock read = lock.readLock();
    read.lock();
    try {
      return handle == 0;
    } finally {
      read.unlock();
    }
  }

  /** Frees the pointer after calls in progress end; later calls do nothing. */
  void close() {
    Lock write = lock.writeLock();
    write.lock();
    try {
      if (handle != 0) {
        long h = handle;
        handle = 0;
        destroyer.destroy(h);
      }
    } finally {
      write.unlock();
    }
  }
}
