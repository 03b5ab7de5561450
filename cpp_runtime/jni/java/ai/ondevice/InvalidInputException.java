package ai.ondevice;

/**
 * The runtime rejected an input or option: a string that is not valid Unicode (an unpaired UTF-16
 * surrogate), a sentence longer than the limit or than the model's positions, a beam size outside
 * 1..64, an unusable thread count. The message names the sentence index where there is one.
 */
public class InvalidInputException extends OndeviceException {
  private static final long serialVersionUID = 1L;

  public InvalidInputException(String message) {
    super(message);
  }
}
