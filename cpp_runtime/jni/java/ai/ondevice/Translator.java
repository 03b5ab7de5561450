package ai.ondevice;

/**
 * Neural machine translation on the device: the Java face of the native {@code
 * ondevice::Translator} (cpp_runtime/include/ondevice/translator.h), mirroring the Python {@code
 * ondevice.Translator}.
 *
 * <p>A translator loads an exported model directory ({@code ondevice export nmt}: manifest.json,
 * encoder.onnx, decoder_step.onnx, weights.bin, spm.model) once; loading checks every file's size
 * and sha256 against the manifest. On Android the directory must be a real directory on the file
 * system: copy the model from the APK's assets to {@code Context.getFilesDir()} on first run (see
 * {@link ModelAssets}) and pass that path.
 *
 * <p>One instance may be used from any number of threads at once. The native memory (about the
 * size of weights.bin, which is memory-mapped, plus the working buffers) is released by {@link
 * #close()} (use try-with-resources), not by the garbage collector: an instance that is never
 * closed leaks it. {@code close()} waits for translations in progress on other threads, may be
 * called more than once, and afterwards every translate call throws {@link
 * IllegalStateException}.
 *
 * <p>Errors: {@link ModelFormatException} when the model cannot be loaded, {@link
 * InvalidInputException} for input the runtime rejects (unpaired surrogates, sentences longer than
 * the model accepts, a beam size outside 1..64), {@link OndeviceException} for anything else the
 * runtime reports. No native failure takes the JVM down.
 */
public final class Translator implements AutoCloseable {
  /** The beam size of {@link #translate(String)} and {@link #translateBatch(String[])}. */
  public static final int DEFAULT_BEAM_SIZE = 4;

  private final NativeHandle handle; // the native ondevice::Translator*

  /**
   * Loads the model directory with one kernel thread per available processor.
   *
   * @throws ModelFormatException if the directory is missing or its files are incomplete or corrupt
   */
  public Translator(String modelDir) {
    this(modelDir, 0);
  }

  /**
   * Loads the model directory.
   *
   * @param threads kernel threads each translate call uses; 0 means one per available processor
   * @throws ModelFormatException if the directory is missing or its files are incomplete or corrupt
   * @throws IllegalArgumentException if threads is negative
   */
  public Translator(String modelDir, int threads) {
    if (modelDir == null) {
      throw new NullPointerException("modelDir is null");
    }
    if (threads < 0) {
      throw new IllegalArgumentException(
          "threads must be >= 0 (0: one per available processor), got " + threads);
    }
    NativeLibrary.load();
    int n = threads == 0 ? Math.max(1, Runtime.getRuntime().availableProcessors()) : threads;
    handle = new NativeHandle(nativeCreate(modelDir, n), "Translator", Translator::nativeDestroy);
  }

  /** The translation of one sentence with beam search of {@link #DEFAULT_BEAM_SIZE}. */
  public String translate(String sentence) {
    return translate(sentence, DEFAULT_BEAM_SIZE);
  }

  /**
   * The translation of one sentence; empty or whitespace-only input gives "".
   *
   * @param beamSize 1 (greedy) to 64
   */
  public String translate(String sentence, int beamSize) {
    if (sentence == null) {
      throw new NullPointerException("sentence is null");
    }
    return translateBatch(new String[] {sentence}, beamSize)[0];
  }

  /** Translations of the sentences, in order, with beam search of {@link #DEFAULT_BEAM_SIZE}. */
  public String[] translateBatch(String[] sentences) {
    return translateBatch(sentences, DEFAULT_BEAM_SIZE);
  }

  /**
   * Translations of the sentences, in order (the same strings as translating them one by one); the
   * runtime batches sentences of similar length. Empty or whitespace-only sentences give "".
   *
   * @param beamSize 1 (greedy) to 64
   */
  public String[] translateBatch(String[] sentences, int beamSize) {
    if (sentences == null) {
      throw new NullPointerException("sentences is null");
    }
    String[] copy = sentences.clone(); // immune to the caller changing the array meanwhile
    for (int i = 0; i < copy.length; i++) {
      if (copy[i] == null) {
        throw new NullPointerException("sentences[" + i + "] is null");
      }
    }
    return handle.call(h -> nativeTranslateBatch(h, copy, beamSize));
  }

  /** Whether {@link #close()} was called. */
  public boolean isClosed() {
    return handle.isClosed();
  }

  /**
   * Frees the native translator, after waiting for translations in progress. Idempotent.
   */
  @Override
  public void close() {
    handle.close();
  }

  private static native long nativeCreate(String modelDir, int threads);

  private static native String[] nativeTranslateBatch(long handle, String[] sentences, int beamSize);

  private static native void nativeDestroy(long handle);
}
