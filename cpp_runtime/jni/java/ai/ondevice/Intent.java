package ai.ondevice;

import java.util.Arrays;
import java.util.Locale;

/**
 * The intent of one spoken command, as {@link Understander#understand(float[])} returns it: for each
 * slot (action, object, location) the chosen label, its probability (softmax over the slot's labels)
 * and the slot's raw logits. Immutable.
 *
 * <p>The labels are the valid intent (one of {@link Understander#getIntents()}) with the highest
 * summed log-probability, as in the Python {@code ondevice.Understander}, so a label need not be its
 * slot's most probable one; with an older model that lists no intents ({@link
 * Understander#isJointDecoding()} false) each slot is its own arg max.
 */
public final class Intent {
  private final String action;
  private final float actionScore;
  private final String object;
  private final float objectScore;
  private final String location;
  private final float locationScore;
  private final float[] actionLogits;
  private final float[] objectLogits;
  private final float[] locationLogits;

  /** Called by the native code (and tests). */
  Intent(String action, float actionScore, String object, float objectScore, String location,
      float locationScore, float[] actionLogits, float[] objectLogits, float[] locationLogits) {
    this.action = action;
    this.actionScore = actionScore;
    this.object = object;
    this.objectScore = objectScore;
    this.location = location;
    this.locationScore = locationScore;
    this.actionLogits = actionLogits;
    this.objectLogits = objectLogits;
    this.locationLogits = locationLogits;
  }

  /** The action label, e.g. "activate". */
  public String getAction() {
    return action;
  }

  /** The object label, e.g. "lights" ("none" when the command names none). */
  public String getObject() {
    return object;
  }

  /** The location label, e.g. "kitchen" ("none" when the command names none). */
  public String getLocation() {
    return location;
  }

  /** Probability of {@link #getAction()} among the action labels, in [0, 1]. */
  public float getActionScore() {
    return actionScore;
  }

  /** Probability of {@link #getObject()} among the object labels, in [0, 1]. */
  public float getObjectScore() {
    return objectScore;
  }

  /** Probability of {@link #getLocation()} among the location labels, in [0, 1]. */
  public float getLocationScore() {
    return locationScore;
  }

  /**
   * A copy of the slot's logits, one per label in the order of {@link
   * Understander#getLabels(String)}.
   *
   * @param slot "action", "object" or "location"
   * @throws IllegalArgumentException for another slot name
   */
  public float[] getLogits(String slot) {
    if ("action".equals(slot)) {
      return actionLogits.clone();
    } else if ("object".equals(slot)) {
      return objectLogits.clone();
    } else if ("location".equals(slot)) {
      return locationLogits.clone();
    }
    throw new IllegalArgumentException("no slot named " + slot + " (slots: action, object, location)");
  }

  /** FSC's intent key, e.g. "activate_lights_kitchen". */
  public String getKey() {
    return action + "_" + object + "_" + location;
  }

  @Override
  public String toString() {
    return String.format(Locale.ROOT, "Intent{action=%s (%.3f), object=%s (%.3f), location=%s (%.3f)}",
        action, actionScore, object, objectScore, location, locationScore);
  }

  @Override
  public boolean equals(Object o) {
    if (this == o) {
      return true;
    }
    if (!(o instanceof Intent)) {
      return false;
    }
    Intent x = (Intent) o;
    return action.equals(x.action) && object.equals(x.object) && location.equals(x.location)
        && Float.compare(actionScore, x.actionScore) == 0 && Float.compare(objectScore, x.objectScore) == 0
        && Float.compare(locationScore, x.locationScore) == 0 && Arrays.equals(actionLogits, x.actionLogits)
        && Arrays.equals(objectLogits, x.objectLogits) && Arrays.equals(locationLogits, x.locationLogits);
  }

  @Override
  public int hashCode() {
    int h = Arrays.hashCode(new Object[] {action, object, location, actionScore, objectScore, locationScore});
    h = 31 * h + Arrays.hashCode(actionLogits);
    h = 31 * h + Arrays.hashCode(objectLogits);
    return 31 * h + Arrays.hashCode(locationLogits);
  }
}
