package ai.ondevice;

/**
 * Loads the JNI library once per class loader.
 *
 * <p>By default {@code System.loadLibrary("ondevice_jni")}: on Android the library comes from the
 * APK's {@code lib/<abi>/libondevice_jni.so} (a module's {@code src/main/jniLibs/<abi>/}); on a
 * desktop JVM from {@code java.library.path}. If the system property {@value #PATH_PROPERTY} is set,
 * it is the absolute path of the library file to load instead (the tests use it).
 */
final class NativeLibrary {
  /** System property: absolute path of libondevice_jni.so, overriding the library search. */
  static final String PATH_PROPERTY = "ai.ondevice.library.path";

  private static boolean loaded;

  private NativeLibrary() {}

  static synchronized void load() {
    if (loaded) {
      return;
    }
    String path = System.getProperty(PATH_PROPERTY);
    if (path != null && !path.isEmpty()) {
      System.load(path);
    } else {
      System.loadLibrary("ondevice_jni");
    }
    loaded = true;
  }
}
