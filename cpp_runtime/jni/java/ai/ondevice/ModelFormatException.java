package ai.ondevice;

/**
 * A model directory is missing, incomplete or corrupt (unreadable file, wrong manifest, size or
 * sha256 mismatch, malformed graph, ...). Thrown by the {@link Translator} constructors.
 */
public class ModelFormatException extends OndeviceException {
  private static final long serialVersionUID = 1L;

  public ModelFormatException(String message) {
    super(message);
  }
}
