package ai.ondevice;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;

/**
 * The check helpers of the Java tests (plain mains, no test framework): counted checks, expected
 * exceptions, named test bodies, temporary model copies. One JVM runs one test class, so the counts
 * are plain static state; {@link #exit()} prints them and ends the process with 0 or 1.
 */
final class Checks {
  private static int failures;
  private static int checks;

  private Checks() {}

  /** A test body; may throw (an unexpected exception fails the test). */
  interface Body {
    void run() throws Exception;
  }

  static void check(boolean ok, String what) {
    checks++;
    if (!ok) {
      failures++;
      System.out.println("  FAIL: " + what);
    }
  }

  static void checkEquals(Object expected, Object actual, String what) {
    check(expected == null ? actual == null : expected.equals(actual),
        what + ": expected <" + expected + "> got <" + actual + ">");
  }

  /** Runs body and checks it throws `type` (or a subclass) with a message; returns the exception. */
  static Throwable checkThrows(Class<? extends Throwable> type, String what, Body body) {
    try {
      body.run();
    } catch (Throwable t) {
      check(type.isInstance(t), what + ": expected " + type.getSimpleName() + ", got " + t);
      if (type.isInstance(t)) {
        check(t.getMessage() != null && !t.getMessage().isEmpty(), what + ": exception without message");
      }
      return t;
    }
    check(false, what + ": expected " + type.getSimpleName() + ", nothing was thrown");
    return null;
  }

  /** Runs one named test and prints "ok" or "FAIL" with its time. */
  static void test(String name, Body body) {
    int before = failures;
    long start = System.nanoTime();
    try {
      body.run();
    } catch (Throwable t) {
      failures++;
      System.out.println("  FAIL: unexpected " + t);
      t.printStackTrace(System.out);
    }
    System.out.printf("%s %s (%.2f s)%n", failures == before ? "ok  " : "FAIL", name,
        (System.nanoTime() - start) / 1e9);
  }

  /** A fresh temporary directory holding copies of `names` from `model`. */
  static File copyModel(File model, String[] names, String prefix) throws IOException {
    File dir = Files.createTempDirectory(prefix).toFile();
    for (String name : names) {
      Files.copy(new File(model, name).toPath(), new File(dir, name).toPath());
    }
    return dir;
  }

  static void deleteTree(File f) {
    File[] children = f.listFiles();
    if (children != null) {
      for (File c : children) {
        deleteTree(c);
      }
    }
    f.delete();
  }

  /** Prints the totals and exits: 0 when every check passed, 1 otherwise. */
  static void exit() {
    System.out.println(checks + " checks, " + failures + " failed");
    System.exit(failures == 0 ? 0 : 1);
  }
}
