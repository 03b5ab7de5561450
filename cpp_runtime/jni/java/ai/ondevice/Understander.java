package ai.ondevice;

/**
 * Spoken-command understanding on the device: the Java face of the native {@code
 * ondevice::Understander} (cpp_runtime/include/ondevice/understander.h), mirroring the Python
 * {@code ondevice.Understander}. It maps one utterance to an {@link Intent}: action, object and
 * location with their probabilities. When the model lists its valid intents (every current export:
 * the 31 combinations of Fluent Speech Commands), the three slots are decoded jointly: the result is
 * the valid intent with the highest summed log-probability of its three labels, the same choice as
 * the Python API's; an older export without that list gets each slot's own arg max ({@link
 * #isJointDecoding()}).
 *
 * <p>An understander loads an exported speech model directory (manifest.json, understand.onnx,
 * weights.bin) once; loading checks every file's size and sha256 against the manifest. On Android
 * the directory must be a real directory on the file system: copy the model from the APK's assets to
 * {@code Context.getFilesDir()} first (see {@link ModelAssets#install(ModelAssets.Opener,
 * java.io.File, String[])}).
 *
 * <p>Audio: 16 kHz mono float PCM, nominally in [-1, 1] (the model normalizes the level of each
 * utterance). Resampling and downmixing are the caller's job: decode and resample to 16 kHz before
 * calling (Android: {@code AudioRecord} at 16000 Hz with {@code ENCODING_PCM_FLOAT}, or 16-bit
 * samples divided by 32768). Between {@link #getMinSamples()} (a fraction of a second) and {@link
 * #getMaxSamples()} (30 s) samples, all finite.
 *
 * <p>One instance may be used from any number of threads at once. The native memory is released by
 * {@link #close()} (use try-with-resources), not by the garbage collector. {@code close()} waits for
 * calls in progress on other threads, may be called more than once, and afterwards every call throws
 * {@link IllegalStateException}.
 *
 * <p>Errors: {@link ModelFormatException} when the model cannot be loaded, {@link
 * InvalidInputException} for audio the runtime rejects (too short, too long, NaN or infinite
 * samples; the message says which), {@link OndeviceException} for anything else the runtime
 * reports. No native failure takes the JVM down.
 */
public final class Understander implements AutoCloseable {
  /** The sample rate {@link #understand(float[])} expects, in Hz. */
  public static final int SAMPLE_RATE = 16000;

  /** The slots of an {@link Intent}, in order. */
  private static final String[] SLOTS = {"action", "object", "location"};

  private final NativeHandle handle; // the native ondevice::Understander*
  private final int minSamples;
  private final int maxSamples;
  private final String[][] labels = new String[SLOTS.length][];
  private final String[][] intents; // the manifest's valid intents; empty when it lists none

  /**
   * Loads the model directory with one kernel thread per available processor.
   *
   * @throws ModelFormatException if the directory is missing or its files are incomplete or corrupt
   */
  public Understander(String modelDir) {
    this(modelDir, 0);
  }

  /**
   * Loads the model directory.
   *
   * @param threads kernel threads each call uses; 0 means one per available processor
   * @throws ModelFormatException if the directory is missing or its files are incomplete or corrupt
   * @throws IllegalArgumentException if threads is negative
   */
  public Understander(String modelDir, int threads) {
    if (modelDir == null) {
      throw new NullPointerException("modelDir is null");
    }
    if (threads < 0) {
      throw new IllegalArgumentException(
          "threads must be >= 0 (0: one per available processor), got " + threads);
    }
    NativeLibrary.load();
    int n = threads == 0 ? Math.max(1, Runtime.getRuntime().availableProcessors()) : threads;
    long h = nativeCreate(modelDir, n);
    try {
      long[] limits = nativeLimits(h);
      minSamples = (int) limits[0];
      maxSamples = (int) limits[1];
      for (int s = 0; s < SLOTS.length; s++) {
        labels[s] = nativeLabels(h, s);
      }
      intents = nativeIntents(h);
    } catch (RuntimeException | Error e) {
      nativeDestroy(h);
      throw e;
    }
    handle = new NativeHandle(h, "Understander", Understander::nativeDestroy);
  }

  /**
   * The intent of one utterance.
   *
   * @param pcm16k 16 kHz mono samples (the array is not kept or modified)
   * @throws InvalidInputException if the audio is too short or too long, or a sample is NaN or
   *     infinite
   */
  public Intent understand(float[] pcm16k) {
    if (pcm16k == null) {
      throw new NullPointerException("pcm16k is null");
    }
    return handle.call(h -> nativeUnderstand(h, pcm16k));
  }

  /** The fewest samples {@link #understand(float[])} accepts (the model's shortest input). */
  public int getMinSamples() {
    return minSamples;
  }

  /** The most samples {@link #understand(float[])} accepts (30 s at 16 kHz). */
  public int getMaxSamples() {
    return maxSamples;
  }

  /**
   * A copy of the labels of a slot, in the order of {@link Intent#getLogits(String)}.
   *
   * @param slot "action", "object" or "location"
   * @throws IllegalArgumentException for another slot name
   */
  public String[] getLabels(String slot) {
    for (int s = 0; s < SLOTS.length; s++) {
      if (SLOTS[s].equals(slot)) {
        return labels[s].clone();
      }
    }
    throw new IllegalArgumentException("no slot named " + slot + " (slots: action, object, location)");
  }

  /**
   * A copy of the model's valid intents, each {action, object, location}, in the manifest's order;
   * empty when the manifest lists none (older exports).
   */
  public String[][] getIntents() {
    String[][] copy = new String[intents.length][];
    for (int i = 0; i < intents.length; i++) {
      copy[i] = intents[i].clone();
    }
    return copy;
  }

  /**
   * Whether {@link #understand(float[])} decodes the slots jointly: true when the model lists its
   * valid intents ({@link #getIntents()} is not empty), so the result is always one of them; false
   * when each slot is its own arg max.
   */
  public boolean isJointDecoding() {
    return intents.length > 0;
  }

  /** Whether {@link #close()} was called. */
  public boolean isClosed() {
    return handle.isClosed();
  }

  /** Frees the native understander, after waiting for calls in progress. Idempotent. */
  @Override
  public void close() {
    handle.close();
  }

  private static native long nativeCreate(String modelDir, int threads);

  private static native long[] nativeLimits(long handle);

  private static native String[] nativeLabels(long handle, int slot);

  private static native String[][] nativeIntents(long handle);

  private static native Intent nativeUnderstand(long handle, float[] pcm);

  private static native void nativeDestroy(long handle);
}
