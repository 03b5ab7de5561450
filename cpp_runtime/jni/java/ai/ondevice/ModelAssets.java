package ai.ondevice;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.Arrays;

/**
 * Installs a model directory from an app's packaged assets into a directory on the file system,
 * where {@link Translator} or {@link Understander} can memory-map it. The runtime needs real files,
 * so an Android app copies {@code assets/<model>/} to {@code getFilesDir()/<model>} once:
 *
 * <pre>{@code
 * AssetManager assets = context.getAssets();
 * String dir = ModelAssets.install(
 *     name -> assets.open("nmt-en-de/" + name), new File(context.getFilesDir(), "nmt-en-de"));
 * Translator translator = new Translator(dir, 2);
 * }</pre>
 *
 * <p>A directory that already holds the same manifest.json (which names every file's sha256) is
 * kept as is, so later starts copy nothing; a different manifest (an app update with a new model)
 * replaces the directory. The copy goes to a temporary sibling directory first and is renamed into
 * place, so an interrupted copy never leaves a half-written model behind. Plain java.io, so it runs
 * on Android API 24.
 */
public final class ModelAssets {
  /** The files of an exported translation model directory ({@code ondevice export nmt}). */
  public static final String[] MODEL_FILES = {
    "manifest.json", "encoder.onnx", "decoder_step.onnx", "weights.bin", "spm.model"
  };

  /** The files of an exported speech-intent model directory (for {@link Understander}). */
  public static final String[] SLU_MODEL_FILES = {"manifest.json", "understand.onnx", "weights.bin"};

  /** Opens one file of the packaged model by name (e.g. {@code AssetManager::open}). */
  public interface Opener {
    InputStream open(String name) throws IOException;
  }

  private ModelAssets() {}

  /**
   * Makes {@code targetDir} hold the translation model that {@code opener} serves ({@link
   * #MODEL_FILES}); returns its absolute path. Call it off the main thread: the first call copies a
   * few MB.
   */
  public static String install(Opener opener, File targetDir) throws IOException {
    return install(opener, targetDir, MODEL_FILES);
  }

  /**
   * Makes {@code targetDir} hold the model files {@code files} (which must include manifest.json)
   * that {@code opener} serves, e.g. {@link #SLU_MODEL_FILES}; returns its absolute path.
   */
  public static String install(Opener opener, File targetDir, String[] files) throws IOException {
    if (!Arrays.asList(files).contains("manifest.json")) {
      throw new IllegalArgumentException("the model files must include manifest.json");
    }
    byte[] manifest = readAll(opener, "manifest.json");
    File current = new File(targetDir, "manifest.json");
    if (current.isFile() && Arrays.equals(manifest, readFile(current))) {
      return targetDir.getAbsolutePath();
    }
    File parent = targetDir.getAbsoluteFile().getParentFile();
    if (parent == null || (!parent.isDirectory() && !parent.mkdirs())) {
      throw new IOException("cannot create " + parent);
    }
    File tmp = new File(parent, targetDir.getName() + ".tmp-" + System.nanoTime());
    if (!tmp.mkdir()) {
      throw new IOException("cannot create " + tmp);
    }
    try {
      byte[] buffer = new byte[1 << 16];
      for (String name : files.clone()) {
        InputStream in = opener.open(name);
        try {
          OutputStream out = new FileOutputStream(new File(tmp, name));
          try {
            for (int n; (n = in.read(buffer)) != -1; ) {
              out.write(buffer, 0, n);
            }
          } finally {
            out.close();
          }
        } finally {
          in.close();
        }
      }
      deleteTree(targetDir);
      if (!tmp.renameTo(targetDir)) {
        throw new IOException("cannot rename " + tmp + " to " + targetDir);
      }
    } finally {
      deleteTree(tmp);
    }
    return targetDir.getAbsolutePath();
  }

  private static byte[] readAll(Opener opener, String name) throws IOException {
    InputStream in = opener.open(name);
    try {
      return readStream(in);
    } finally {
      in.close();
    }
  }

  private static byte[] readFile(File f) throws IOException {
    InputStream in = new java.io.FileInputStream(f);
    try {
      return readStream(in);
    } finally {
      in.close();
    }
  }

  private static byte[] readStream(InputStream in) throws IOException {
    java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
    byte[] buffer = new byte[1 << 16];
    for (int n; (n = in.read(buffer)) != -1; ) {
      out.write(buffer, 0, n);
    }
    return out.toByteArray();
  }

  private static void deleteTree(File f) {
    File[] children = f.listFiles();
    if (children != null) {
      for (File c : children) {
        deleteTree(c);
      }
    }
    f.delete();
  }
}
