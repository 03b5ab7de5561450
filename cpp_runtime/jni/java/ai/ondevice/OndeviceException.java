package ai.ondevice;

/**
 * A failure reported by the native ondevice runtime. The message is the runtime's own.
 *
 * <p>Subclasses say whose fault it was: {@link ModelFormatException} for model files that cannot be
 * loaded, {@link InvalidInputException} for input or options the runtime rejects. This class itself
 * is used for anything else (for example the native heap running out of memory).
 */
public class OndeviceException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public OndeviceException(String message) {
    super(message);
  }

  public OndeviceException(String message, Throwable cause) {
    super(message, cause);
  }
}
