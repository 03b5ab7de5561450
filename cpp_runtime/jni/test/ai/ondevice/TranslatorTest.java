package ai.ondevice;

import static ai.ondevice.Checks.*;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Tests of the Java API over the JNI library on the host JVM (a plain main, no test framework).
 *
 * <pre>
 * java -Xcheck:jni -Dai.ondevice.library.path=/abs/libondevice_jni.so \
 *     -cp ondevice.jar:ondevice-tests.jar ai.ondevice.TranslatorTest REPO_ROOT
 * </pre>
 *
 * CTest runs it (test ondevice_jni_java). Exit status 0 when every check passed, 1 otherwise.
 * {@code --quick} (after REPO_ROOT) translates fewer sentences: the sanitizer build uses it, where
 * the instrumented runtime is ~20x slower.
 * Expected translations come from the Python API: cpp_runtime/jni/test/expected_en_de.tsv, written
 * by cpp_runtime/jni/test/make_expected.py.
 */
public final class TranslatorTest {
  private static File model;
  private static File root;
  private static boolean quick;

  private static final class Case {
    final int beam;
    final String source;
    final String expected;

    Case(int beam, String source, String expected) {
      this.beam = beam;
      this.source = source;
      this.expected = expected;
    }
  }

  private static List<Case> readCases() throws IOException {
    File tsv = new File(root, "cpp_runtime/jni/test/expected_en_de.tsv");
    List<Case> cases = new ArrayList<>();
    for (String line : Files.readAllLines(tsv.toPath(), StandardCharsets.UTF_8)) {
      if (line.isEmpty()) {
        continue;
      }
      String[] f = line.split("\t", -1);
      if (f.length != 3) {
        throw new IOException(tsv + ": not 3 tab-separated fields: " + line);
      }
      cases.add(new Case(Integer.parseInt(f[0]), f[1], f[2]));
    }
    return cases;
  }

  private static File copyModel() throws IOException {
    return Checks.copyModel(model, ModelAssets.MODEL_FILES, "ondevice-jni-test");
  }

  /** No unpaired surrogates: a string the runtime produced must be valid UTF-16. */
  private static boolean validUtf16(String s) {
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (Character.isHighSurrogate(c)) {
        if (i + 1 >= s.length() || !Character.isLowSurrogate(s.charAt(i + 1))) {
          return false;
        }
        i++;
      } else if (Character.isLowSurrogate(c)) {
        return false;
      }
    }
    return true;
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 1 || args.length > 2 || (args.length == 2 && !args[1].equals("--quick"))) {
      System.err.println("usage: TranslatorTest REPO_ROOT [--quick]");
      System.exit(2);
    }
    root = new File(args[0]).getAbsoluteFile();
    model = new File(root, "models/nmt-en-de-bcq/onnx");
    quick = args.length == 2;
    final List<Case> all = readCases();
    // Quick: greedy cases only (beam search costs ~4x), which still cover the non-ASCII lines.
    final List<Case> cases = new ArrayList<>();
    for (Case c : all) {
      if (!quick || c.beam == 1) {
        cases.add(c);
      }
    }
    final Translator t = new Translator(model.getPath(), 1);

    test("translations equal the Python API's (expected_en_de.tsv)", () -> {
      Map<Integer, List<Case>> byBeam = new LinkedHashMap<>();
      for (Case c : cases) {
        byBeam.computeIfAbsent(c.beam, k -> new ArrayList<>()).add(c);
      }
      check(quick || (byBeam.size() >= 2 && cases.size() >= 30), "the expected file has both beam sizes");
      for (Map.Entry<Integer, List<Case>> e : byBeam.entrySet()) {
        List<Case> list = e.getValue();
        String[] src = new String[list.size()];
        for (int i = 0; i < src.length; i++) {
          src[i] = list.get(i).source;
        }
        String[] got = t.translateBatch(src, e.getKey());
        checkEquals(src.length, got.length, "batch length");
        for (int i = 0; i < src.length; i++) {
          checkEquals(list.get(i).expected, got[i], "beam " + e.getKey() + " '" + src[i] + "'");
        }
      }
    });

    test("translate(one) equals translateBatch; defaults are beam 4", () -> {
      for (Case c : cases) {
        if (c.beam == 4) {
          checkEquals(c.expected, t.translate(c.source), "translate('" + c.source + "')");
        } else {
          checkEquals(c.expected, t.translate(c.source, c.beam), "translate('" + c.source + "', 1)");
        }
      }
      checkEquals("Das Haus ist wenig.", t.translate("The house is small."), "default beam");
      checkEquals("Das Haus ist kleine.", t.translate("The house is small.", 1), "greedy");
      String[] two = t.translateBatch(new String[] {"The house is small.", "The house is small."});
      checkEquals(Arrays.asList("Das Haus ist wenig.", "Das Haus ist wenig."), Arrays.asList(two),
          "translateBatch default beam");
    });

    test("empty and whitespace input give empty output", () -> {
      checkEquals("", t.translate(""), "empty");
      checkEquals("", t.translate("   \t "), "whitespace");
      checkEquals(0, t.translateBatch(new String[0]).length, "empty batch");
      String[] got = t.translateBatch(new String[] {"", "The house is small.", " "}, 1);
      checkEquals(Arrays.asList("", "Das Haus ist kleine.", ""), Arrays.asList(got), "mixed batch");
    });

    test("any valid Unicode input translates without failing", () -> {
      String[] inputs = {
        "😀😀😀", "日本語のテキスト", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🍕🎵 \uD83D\uDC4D\uD83C\uDFFD", "a\u0000b", "\u0000",
        "e\u0301\u0301\u0301", "\uFEFFBOM", "\uFFFF\uFFFE", "Z\u200DW\u200CJ", "🏳️‍🌈 flags", "\u00A0\u3000",
      };
      for (String s : inputs) {
        String out = t.translate(s, 1);
        check(out != null && validUtf16(out), "output of '" + s + "' is valid UTF-16: " + out);
      }
    });

    test("invalid input is InvalidInputException with the runtime's message", () -> {
      Throwable e = checkThrows(InvalidInputException.class, "unpaired high surrogate",
          () -> t.translate("abc\uD800def"));
      check(e != null && e.getMessage().contains("surrogate"), "message names the surrogate: " + e);
      checkThrows(InvalidInputException.class, "unpaired low surrogate", () -> t.translate("\uDC00"));
      checkThrows(InvalidInputException.class, "high surrogate at the end", () -> t.translate("x\uD83D"));
      e = checkThrows(InvalidInputException.class, "bad sentence in a batch",
          () -> t.translateBatch(new String[] {"fine", "fine", "\uDFFF\uD800"}));
      check(e != null && e.getMessage().startsWith("sentence 2:"), "message names the sentence: " + e);
      char[] big = new char[(1 << 20) + 1];
      Arrays.fill(big, 'a');
      checkThrows(InvalidInputException.class, "longer than 1 MiB", () -> t.translate(new String(big)));
      StringBuilder longText = new StringBuilder();
      for (int i = 0; i < 1100; i++) {
        longText.append("house ");
      }
      e = checkThrows(InvalidInputException.class, "more tokens than the model's positions",
          () -> t.translate(longText.toString()));
      System.out.println("    (runtime says: " + (e == null ? null : e.getMessage()) + ")");
      checkThrows(InvalidInputException.class, "beam 0", () -> t.translate("a", 0));
      checkThrows(InvalidInputException.class, "beam 65", () -> t.translate("a", 65));
      checkThrows(NullPointerException.class, "null sentence", () -> t.translate(null));
      checkThrows(NullPointerException.class, "null array", () -> t.translateBatch(null));
      checkThrows(NullPointerException.class, "null element",
          () -> t.translateBatch(new String[] {"a", null}));
      checkEquals("Das Haus ist wenig.", t.translate("The house is small."), "still works after errors");
    });

    test("8 threads sharing one Translator give the sequential results", () -> {
      final int beam = quick ? 1 : 4;
      final String[] src = new String[quick ? 3 : 12];
      final String[] expected = new String[src.length];
      int k = 0;
      for (Case c : cases) {
        if (c.beam == beam && k < src.length) {
          src[k] = c.source;
          expected[k] = c.expected;
          k++;
        }
      }
      final Translator shared = new Translator(model.getPath(), 2);
      ExecutorService pool = Executors.newFixedThreadPool(8);
      try {
        final CountDownLatch go = new CountDownLatch(1);
        List<Future<String[]>> results = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
          final int offset = i;
          results.add(pool.submit(new Callable<String[]>() {
            @Override
            public String[] call() throws Exception {
              go.await();
              String[] out = new String[src.length];
              // Each thread starts elsewhere in the list and mixes single and batch calls.
              for (int j = 0; j < src.length; j++) {
                int idx = (j + offset) % src.length;
                out[idx] = shared.translate(src[idx], beam);
              }
              String[] batch = shared.translateBatch(src, beam);
              for (int j = 0; j < src.length; j++) {
                if (!batch[j].equals(out[j])) {
                  out[j] = "batch/single mismatch: " + batch[j] + " vs " + out[j];
                }
              }
              return out;
            }
          }));
        }
        go.countDown();
        for (int i = 0; i < results.size(); i++) {
          checkEquals(Arrays.asList(expected), Arrays.asList(results.get(i).get()), "thread " + i);
        }
      } finally {
        pool.shutdown();
        shared.close();
      }
    });

    test("close() during translations waits for them; later calls throw IllegalStateException", () -> {
      final Translator victim = new Translator(model.getPath(), 1);
      ExecutorService pool = Executors.newFixedThreadPool(4);
      try {
        List<Future<Integer>> results = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
          results.add(pool.submit(() -> {
            int done = 0;
            for (int j = 0; j < 50; j++) {
              try {
                if (!"Das Haus ist wenig.".equals(victim.translate("The house is small."))) {
                  return -1;
                }
                done++;
              } catch (IllegalStateException closed) {
                return done;
              }
            }
            return done;
          }));
        }
        Thread.sleep(200);
        victim.close();
        check(victim.isClosed(), "isClosed after close");
        for (Future<Integer> f : results) {
          check(f.get() >= 0, "translations before close were correct, after it IllegalStateException");
        }
      } finally {
        pool.shutdown();
      }
    });

    test("use after close throws IllegalStateException; close() twice is fine", () -> {
      Translator closed = new Translator(model.getPath());
      check(!closed.isClosed(), "open after construction");
      checkEquals("Das Haus ist wenig.", closed.translate("The house is small."), "default threads");
      closed.close();
      closed.close();
      checkThrows(IllegalStateException.class, "translate after close", () -> closed.translate("a"));
      checkThrows(IllegalStateException.class, "translateBatch after close",
          () -> closed.translateBatch(new String[] {"a"}));
      try (Translator auto = new Translator(model.getPath(), 1)) {
        checkEquals("Das Haus ist kleine.", auto.translate("The house is small.", 1), "try-with-resources");
      }
    });

    test("bad model directories are ModelFormatException; bad options are rejected", () -> {
      Throwable e = checkThrows(ModelFormatException.class, "missing directory",
          () -> new Translator(new File(root, "no/such/model").getPath(), 1));
      System.out.println("    (runtime says: " + (e == null ? null : e.getMessage()) + ")");
      File dir = copyModel();
      try {
        try (RandomAccessFile f = new RandomAccessFile(new File(dir, "weights.bin"), "rw")) {
          f.setLength(f.length() / 2);
        }
        e = checkThrows(ModelFormatException.class, "truncated weights.bin",
            () -> new Translator(dir.getPath(), 1));
        check(e != null && e.getMessage().contains("weights.bin"), "message names weights.bin: " + e);
        Files.write(new File(dir, "manifest.json").toPath(), "{\"format\":".getBytes(StandardCharsets.UTF_8));
        checkThrows(ModelFormatException.class, "corrupt manifest.json", () -> new Translator(dir.getPath(), 1));
      } finally {
        deleteTree(dir);
      }
      check(new ModelFormatException("x") instanceof OndeviceException, "ModelFormatException is an OndeviceException");
      check(new InvalidInputException("x") instanceof RuntimeException, "InvalidInputException is unchecked");
      checkThrows(IllegalArgumentException.class, "threads -1", () -> new Translator(model.getPath(), -1));
      checkThrows(NullPointerException.class, "null directory", () -> new Translator(null, 1));
      checkThrows(InvalidInputException.class, "unpaired surrogate in the path",
          () -> new Translator(model.getPath() + "\uD800", 1));
    });

    test("ModelAssets.install copies a model once and replaces it when the manifest changes", () -> {
      File parent = Files.createTempDirectory("ondevice-assets-test").toFile();
      try {
        File target = new File(parent, "files/nmt-en-de");
        ModelAssets.Opener opener = name -> new FileInputStream(new File(model, name));
        String dir = ModelAssets.install(opener, target);
        checkEquals(target.getAbsolutePath(), dir, "returned path");
        for (String name : ModelAssets.MODEL_FILES) {
          check(Arrays.equals(Files.readAllBytes(new File(model, name).toPath()),
              Files.readAllBytes(new File(target, name).toPath())), name + " copied");
        }
        File marker = new File(target, "marker");
        check(marker.createNewFile(), "marker created");
        ModelAssets.install(opener, target);
        check(marker.exists(), "a second install with the same manifest copies nothing");
        ModelAssets.Opener updated = name -> name.equals("manifest.json")
            ? new java.io.ByteArrayInputStream("{\"format\": \"changed\"}".getBytes(StandardCharsets.UTF_8))
            : new FileInputStream(new File(model, name));
        ModelAssets.install(updated, target);
        check(!marker.exists(), "a new manifest replaces the directory");
        ModelAssets.install(opener, target);
        String[] left = parent.list();
        checkEquals(Arrays.asList("files"), left == null ? null : Arrays.asList(left), "no temporary dirs left");
        try (Translator fromAssets = new Translator(dir, 1)) {
          checkEquals("Das Haus ist wenig.", fromAssets.translate("The house is small."), "installed model");
        }
      } finally {
        deleteTree(parent);
      }
    });

    t.close();
    exit();
  }
}
