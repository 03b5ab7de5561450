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
import java.util.List;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Tests of ai.ondevice.Understander over the JNI library on the host JVM (a plain main, no test
 * framework), as TranslatorTest does for the translator.
 *
 * <pre>
 * java -Xcheck:jni -Dai.ondevice.library.path=/abs/libondevice_jni.so \
 *     -cp ondevice.jar:ondevice-tests.jar ai.ondevice.UnderstanderTest SHIPPED_MODEL_DIR
 * </pre>
 *
 * The model: $ONDEVICE_TEST_SLU_DIR when set (the test fails if it is not a model directory), else
 * SHIPPED_MODEL_DIR (CTest passes the checkout's models/slu-intent-bcq/onnx), the same rule as the C++
 * test (cpp_runtime/tests/test_understander.cc). When neither exists it prints a SKIP line and exits
 * with status 77, which CTest reports as skipped. CTest runs it as ondevice_jni_java_understander;
 * exit status 0 when every check passed, 1 otherwise.
 */
public final class UnderstanderTest {
  private static File model;
  private static File shipped; // the checkout's models/slu-intent-bcq/onnx

  /** Deterministic test audio: a chirp plus noise, `seconds` long at 16 kHz. */
  private static float[] audio(double seconds, long seed) {
    Random rng = new Random(seed);
    float[] a = new float[(int) (seconds * 16000)];
    for (int i = 0; i < a.length; i++) {
      double t = i / 16000.0;
      a[i] = (float) (0.4 * Math.sin(2 * Math.PI * (200 + 300 * t) * t) + 0.05 * rng.nextGaussian());
    }
    return a;
  }

  private static File copyModel() throws IOException {
    return Checks.copyModel(model, ModelAssets.SLU_MODEL_FILES, "ondevice-jni-slu-test");
  }

  private static final String[] SLOTS = {"action", "object", "location"};

  /** Exit status when there is no model to test (CTest: SKIP_RETURN_CODE, shown as skipped). */
  private static final int SKIPPED = 77;

  private static String label(Intent r, String slot) {
    return slot.equals("action") ? r.getAction() : slot.equals("object") ? r.getObject() : r.getLocation();
  }

  private static float score(Intent r, String slot) {
    return slot.equals("action") ? r.getActionScore()
        : slot.equals("object") ? r.getObjectScore() : r.getLocationScore();
  }

  /** Each slot's log-probabilities, log(max(softmax, 1e-300)) in double, as the Python API's. */
  private static double[] logProbs(float[] logits) {
    double top = Double.NEGATIVE_INFINITY;
    for (float v : logits) {
      top = Math.max(top, v);
    }
    double z = 0;
    for (float v : logits) {
      z += Math.exp(v - top);
    }
    double[] out = new double[logits.length];
    for (int i = 0; i < logits.length; i++) {
      out[i] = Math.log(Math.max(Math.exp(logits[i] - top) / z, 1e-300));
    }
    return out;
  }

  private static int indexOf(String[] labels, String label) {
    for (int i = 0; i < labels.length; i++) {
      if (labels[i].equals(label)) {
        return i;
      }
    }
    return -1;
  }

  /** The summed log-probability of one {action, object, location} combination. */
  private static double intentScore(Understander u, Intent r, String[] intent) {
    double sum = 0;
    for (int s = 0; s < SLOTS.length; s++) {
      int i = indexOf(u.getLabels(SLOTS[s]), intent[s]);
      check(i >= 0, intent[s] + " is a " + SLOTS[s] + " label");
      sum += logProbs(r.getLogits(SLOTS[s]))[Math.max(i, 0)];
    }
    return sum;
  }

  /**
   * Checks r's labels: the valid intent with the highest summed log-probability (first on ties;
   * another one only with a sum equal to 1e-12) when the model lists intents, else each slot's arg
   * max; and each score is its label's softmax probability.
   */
  private static void checkLabels(Understander u, Intent r, String what) {
    String[][] intents = u.getIntents();
    checkEquals(intents.length > 0, u.isJointDecoding(), what + ": joint decoding iff intents");
    String[] got = {r.getAction(), r.getObject(), r.getLocation()};
    if (intents.length > 0) {
      int best = 0;
      double top = Double.NEGATIVE_INFINITY;
      int at = -1;
      for (int j = 0; j < intents.length; j++) {
        double sum = intentScore(u, r, intents[j]);
        if (sum > top) {
          top = sum;
          best = j;
        }
        if (Arrays.equals(intents[j], got)) {
          at = j;
        }
      }
      check(at >= 0, what + ": " + r.getKey() + " is a valid intent");
      if (at >= 0 && at != best) {
        double sum = intentScore(u, r, got);
        check(Math.abs(sum - top) <= 1e-12, what + ": " + r.getKey() + " (" + sum + ") instead of "
            + String.join("_", intents[best]) + " (" + top + ")");
      }
    }
    for (int s = 0; s < SLOTS.length; s++) {
      String slot = SLOTS[s];
      String[] labels = u.getLabels(slot);
      float[] logits = r.getLogits(slot);
      checkEquals(labels.length, logits.length, what + ": " + slot + " logits per label");
      int best = 0;
      for (int i = 1; i < logits.length; i++) {
        if (logits[i] > logits[best]) {
          best = i;
        }
      }
      if (intents.length == 0) {
        checkEquals(labels[best], label(r, slot), what + ": " + slot + " label is the arg max");
      }
      int chosen = indexOf(labels, label(r, slot));
      check(chosen >= 0, what + ": " + slot + " label " + label(r, slot) + " is one of the labels");
      double z = 0;
      for (float v : logits) {
        z += Math.exp(v - logits[best]);
      }
      double p = Math.exp(logits[Math.max(chosen, 0)] - logits[best]) / z;
      check(Math.abs(score(r, slot) - p) < 1e-6, what + ": " + slot + " score " + score(r, slot) + " vs " + p);
      check(score(r, slot) >= 0 && score(r, slot) <= 1, what + ": " + slot + " score in [0, 1]");
    }
  }

  /** Sets the "intents" of dir's manifest.json to the JSON text value ("": none). */
  private static void setIntents(File dir, String value, int n) throws IOException {
    File f = new File(dir, "manifest.json");
    String m = new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8);
    m = m.replace("\"intents\":", "\"intents_unused_" + n + "\":"); // a key the runtime ignores
    if (!value.isEmpty()) {
      int brace = m.indexOf('{');
      m = m.substring(0, brace + 1) + "\"intents\": " + value + ", " + m.substring(brace + 1);
    }
    Files.write(f.toPath(), m.getBytes(StandardCharsets.UTF_8));
  }

  private static String jsonIntents(List<String[]> intents) {
    StringBuilder b = new StringBuilder("[");
    for (String[] it : intents) {
      b.append(b.length() > 1 ? ", " : "").append("[\"").append(it[0]).append("\", \"").append(it[1])
          .append("\", \"").append(it[2]).append("\"]");
    }
    return b.append("]").toString();
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: UnderstanderTest SHIPPED_MODEL_DIR");
      System.exit(2);
    }
    shipped = new File(args[0]).getAbsoluteFile();
    String env = System.getenv("ONDEVICE_TEST_SLU_DIR");
    if (env != null && !env.isEmpty()) {
      model = new File(env).getAbsoluteFile();
      if (!new File(model, "manifest.json").isFile()) {
        System.out.println("FAIL: ONDEVICE_TEST_SLU_DIR=" + env + " has no manifest.json");
        System.exit(1);
      }
    } else {
      model = shipped;
      if (!new File(model, "manifest.json").isFile()) {
        System.out.println("*** SKIP: no speech model: " + model
            + " is not in this checkout and ONDEVICE_TEST_SLU_DIR is unset ***");
        System.exit(SKIPPED);
      }
    }
    System.out.println("speech model: " + model);
    final Understander u = new Understander(model.getPath(), 1);

    test("results are consistent: labels = the best valid intent, score = its softmax probability", () -> {
      checkEquals(16000, Understander.SAMPLE_RATE, "sample rate");
      check(u.getMinSamples() >= 1 && u.getMinSamples() < u.getMaxSamples(), "limits " + u.getMinSamples()
          + ".." + u.getMaxSamples());
      checkEquals(30 * 16000, u.getMaxSamples(), "max samples (30 s)");
      for (double secs : new double[] {0.5, 1.7, 3.0}) {
        Intent r = u.understand(audio(secs, 7));
        checkLabels(u, r, secs + " s");
        checkEquals(r.getAction() + "_" + r.getObject() + "_" + r.getLocation(), r.getKey(), "key");
        String s = r.toString();
        check(s.startsWith("Intent{action=" + r.getAction() + " (") && s.contains("location=" + r.getLocation()),
            "toString: " + s);
        checkEquals(r, u.understand(audio(secs, 7)), "same audio, same result");
        checkEquals(r.hashCode(), u.understand(audio(secs, 7)).hashCode(), "same hash");
      }
      // Silence and the shortest input are accepted.
      check(u.understand(new float[16000]) != null, "silence");
      check(u.understand(new float[u.getMinSamples()]) != null, "shortest");
      float[] logits = u.understand(audio(1.0, 1)).getLogits("action");
      logits[0] = 1e9f;
      check(u.understand(audio(1.0, 1)).getLogits("action")[0] != 1e9f, "getLogits returns a copy");
      checkThrows(IllegalArgumentException.class, "bad slot", () -> u.getLabels("intent"));
      checkThrows(IllegalArgumentException.class, "bad slot (logits)",
          () -> u.understand(audio(1.0, 1)).getLogits("room"));
      System.out.println("    (" + u.understand(audio(1.0, 1)) + ")");
    });

    test("bad audio is InvalidInputException with the runtime's message", () -> {
      final int lo = u.getMinSamples();
      final int hi = u.getMaxSamples();
      Throwable e = checkThrows(InvalidInputException.class, "too short", () -> u.understand(new float[lo - 1]));
      check(e != null && e.getMessage().startsWith("audio too short: " + (lo - 1) + " samples, at least " + lo),
          "message: " + e);
      checkThrows(InvalidInputException.class, "empty", () -> u.understand(new float[0]));
      e = checkThrows(InvalidInputException.class, "too long", () -> u.understand(new float[hi + 1]));
      check(e != null && e.getMessage().startsWith("audio too long: " + (hi + 1) + " samples"), "message: " + e);
      for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}) {
        float[] a = audio(0.5, 3);
        a[321] = bad;
        e = checkThrows(InvalidInputException.class, "sample " + bad, () -> u.understand(a));
        check(e != null && e.getMessage().startsWith("audio sample 321 is"), "message: " + e);
      }
      checkThrows(NullPointerException.class, "null audio", () -> u.understand(null));
      check(u.understand(audio(0.5, 3)) != null, "still works after errors");
    });

    test("4 threads sharing one Understander give the sequential results", () -> {
      final float[][] inputs = new float[4][];
      final Intent[] expected = new Intent[4];
      final Understander shared = new Understander(model.getPath(), 2);
      for (int i = 0; i < 4; i++) {
        inputs[i] = audio(0.6 + 0.4 * i, 10 + i);
        expected[i] = shared.understand(inputs[i]);
      }
      ExecutorService pool = Executors.newFixedThreadPool(4);
      try {
        final CountDownLatch go = new CountDownLatch(1);
        List<Future<Intent[]>> results = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
          final int offset = t;
          results.add(pool.submit(new Callable<Intent[]>() {
            @Override
            public Intent[] call() throws Exception {
              go.await();
              Intent[] out = new Intent[4];
              boolean same = true;
              for (int k = 0; k < 8; k++) {
                int idx = (k + offset) % 4;
                Intent r = shared.understand(inputs[idx]);
                same &= out[idx] == null || out[idx].equals(r);
                out[idx] = r;
              }
              return same ? out : null;
            }
          }));
        }
        go.countDown();
        for (int t = 0; t < results.size(); t++) {
          Intent[] got = results.get(t).get();
          checkEquals(Arrays.asList(expected), got == null ? null : Arrays.asList(got), "thread " + t);
        }
      } finally {
        pool.shutdown();
        shared.close();
      }
      try (Understander other = new Understander(model.getPath())) {  // threads: one per processor
        checkEquals(expected[2], other.understand(inputs[2]), "another thread count, the same result");
      }
    });

    test("close() during calls waits for them; later calls throw IllegalStateException", () -> {
      final Understander victim = new Understander(model.getPath(), 1);
      final float[] a = audio(1.0, 5);
      final Intent want = victim.understand(a);
      ExecutorService pool = Executors.newFixedThreadPool(4);
      try {
        List<Future<Integer>> results = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
          results.add(pool.submit(() -> {
            int done = 0;
            for (int j = 0; j < 200; j++) {
              try {
                if (!want.equals(victim.understand(a))) {
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
          check(f.get() >= 0, "results before close were correct, after it IllegalStateException");
        }
      } finally {
        pool.shutdown();
      }
      victim.close();  // idempotent
      checkThrows(IllegalStateException.class, "understand after close", () -> victim.understand(a));
      try (Understander auto = new Understander(model.getPath(), 1)) {
        checkEquals(want, auto.understand(a), "try-with-resources");
      }
    });

    test("joint decoding over the manifest's intents; arg max without them", () -> {
      final File dir = copyModel();
      try {
        float[][] inputs = {audio(0.6, 21), audio(1.4, 22), new float[8000]};
        // Without "intents" (an older export): each slot's arg max.
        setIntents(dir, "", 1);
        Intent[] argmax = new Intent[inputs.length];
        try (Understander plain = new Understander(dir.getPath(), 1)) {
          check(!plain.isJointDecoding() && plain.getIntents().length == 0, "no intents listed");
          for (int i = 0; i < inputs.length; i++) {
            argmax[i] = plain.understand(inputs[i]);
            checkLabels(plain, argmax[i], "arg max " + i);
          }
        }
        // Every combination but the arg max ones: the best of the rest.
        List<String[]> valid = new ArrayList<>();
        for (String a : u.getLabels("action")) {
          for (String o : u.getLabels("object")) {
            for (String l : u.getLabels("location")) {
              boolean isArgmax = false;
              for (Intent r : argmax) {
                isArgmax |= r.getAction().equals(a) && r.getObject().equals(o) && r.getLocation().equals(l);
              }
              if (!isArgmax) {
                valid.add(new String[] {a, o, l});
              }
            }
          }
        }
        setIntents(dir, jsonIntents(valid), 2);
        try (Understander joint = new Understander(dir.getPath(), 1)) {
          check(joint.isJointDecoding(), "intents listed");
          checkEquals(valid.size(), joint.getIntents().length, "intents");
          check(Arrays.equals(valid.get(3), joint.getIntents()[3]), "intents in file order");
          joint.getIntents()[0][0] = "changed";
          checkEquals(valid.get(0)[0], joint.getIntents()[0][0], "getIntents returns a copy");
          for (int i = 0; i < inputs.length; i++) {
            Intent r = joint.understand(inputs[i]);
            checkLabels(joint, r, "joint " + i);
            check(!r.getKey().equals(argmax[i].getKey()), "joint " + i + ": not the arg max " + r.getKey());
            check(Arrays.equals(r.getLogits("object"), argmax[i].getLogits("object")), "same logits");
          }
        }
        // Malformed lists are ModelFormatException naming manifest.json.
        String[] bad = {"[]", "{}", "[[\"" + valid.get(0)[0] + "\"]]",
            "[[\"" + valid.get(0)[0] + "\", \"" + valid.get(0)[1] + "\", \"no such room\"]]",
            jsonIntents(Arrays.asList(valid.get(0), valid.get(1), valid.get(0)))};
        for (int k = 0; k < bad.length; k++) {
          setIntents(dir, bad[k], 3 + k);
          Throwable e = checkThrows(ModelFormatException.class, "intents " + bad[k],
              () -> new Understander(dir.getPath(), 1));
          check(e != null && e.getMessage().contains("manifest.json") && e.getMessage().contains("/intents"),
              "message names the file and the key: " + e);
        }
      } finally {
        deleteTree(dir);
      }
    });

    test("bad model directories are ModelFormatException; bad options are rejected", () -> {
      checkThrows(ModelFormatException.class, "missing directory",
          () -> new Understander(new File(model, "no/such/model").getPath(), 1));
      File dir = copyModel();
      try {
        try (Understander ok = new Understander(dir.getPath(), 1)) {
          check(ok.understand(audio(0.5, 1)) != null, "the copy loads");
        }
        try (RandomAccessFile f = new RandomAccessFile(new File(dir, "weights.bin"), "rw")) {
          f.seek(f.length() / 2);
          int b = f.read();
          f.seek(f.length() / 2);
          f.write(b ^ 0x10);
        }
        Throwable e = checkThrows(ModelFormatException.class, "modified weights.bin",
            () -> new Understander(dir.getPath(), 1));
        check(e != null && e.getMessage().contains("sha256"), "message names the checksum: " + e);
        try (RandomAccessFile f = new RandomAccessFile(new File(dir, "weights.bin"), "rw")) {
          f.setLength(f.length() / 2);
        }
        checkThrows(ModelFormatException.class, "truncated weights.bin", () -> new Understander(dir.getPath(), 1));
        Files.write(new File(dir, "manifest.json").toPath(), "{\"format\":".getBytes(StandardCharsets.UTF_8));
        checkThrows(ModelFormatException.class, "corrupt manifest.json", () -> new Understander(dir.getPath(), 1));
      } finally {
        deleteTree(dir);
      }
      // A translation model is not a speech model.
      File nmt = new File(shipped.getParentFile().getParentFile(), "nmt-en-de-bcq/onnx");
      if (new File(nmt, "manifest.json").isFile()) {
        Throwable e = checkThrows(ModelFormatException.class, "translation model",
            () -> new Understander(nmt.getPath(), 1));
        check(e != null && e.getMessage().contains("slu-intent"), "message says what kind is needed: " + e);
      }
      checkThrows(IllegalArgumentException.class, "threads -1", () -> new Understander(model.getPath(), -1));
      checkThrows(NullPointerException.class, "null directory", () -> new Understander(null, 1));
    });

    test("ModelAssets.install copies a speech model", () -> {
      File parent = Files.createTempDirectory("ondevice-slu-assets-test").toFile();
      try {
        File target = new File(parent, "files/slu");
        String dir = ModelAssets.install(name -> new FileInputStream(new File(model, name)), target,
            ModelAssets.SLU_MODEL_FILES);
        for (String name : ModelAssets.SLU_MODEL_FILES) {
          check(Arrays.equals(Files.readAllBytes(new File(model, name).toPath()),
              Files.readAllBytes(new File(target, name).toPath())), name + " copied");
        }
        float[] a = audio(0.8, 2);
        try (Understander installed = new Understander(dir, 1)) {
          checkEquals(u.understand(a), installed.understand(a), "installed model");
        }
        checkThrows(IllegalArgumentException.class, "files without manifest.json",
            () -> ModelAssets.install(name -> new FileInputStream(new File(model, name)), target,
                new String[] {"weights.bin"}));
      } finally {
        deleteTree(parent);
      }
    });

    u.close();
    exit();
  }
}
