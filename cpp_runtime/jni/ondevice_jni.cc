// JNI bindings of ai.ondevice.Translator and ai.ondevice.Understander
// (cpp_runtime/jni/java/ai/ondevice/) over ondevice::Translator and
// ondevice::Understander.
//
// Rules every entry point follows:
//  * No C++ exception crosses into the JVM: each body runs inside guard(), which
//    turns ondevice::FormatError into ai.ondevice.ModelFormatException,
//    ondevice::ArgumentError into ai.ondevice.InvalidInputException, and any
//    other ondevice::Error, std::bad_alloc, std::exception or unknown exception
//    into ai.ondevice.OndeviceException, with the runtime's message.
//  * Strings cross as UTF-16 in both directions (GetStringRegion / NewString),
//    converted to and from standard UTF-8 here. GetStringUTFChars and
//    NewStringUTF are not used: they speak JNI's *modified* UTF-8 (U+0000 as
//    C0 80, a supplementary character as two 3-byte surrogates), which is not
//    what the runtime's tokenizer reads or writes. An unpaired surrogate in the
//    input is an InvalidInputException.
//  * After every JNI call that can raise a Java exception the code checks for
//    it and unwinds (JavaPending) without calling JNI again, so the pending
//    exception reaches the caller (clean under -Xcheck:jni).
//  * The handle is an ondevice::Translator* (ondevice::Understander*) as a
//    jlong. The Java class owns it and serializes nativeDestroy against calls
//    with a read-write lock; the native objects themselves are safe to use
//    from several threads.
//  * Audio crosses as a float[] copied with GetFloatArrayRegion (no critical
//    section held while the model runs, so the GC is never blocked), after the
//    length was checked (a huge array is rejected before it is copied).
#include <jni.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/translator.h"
#include "ondevice/understander.h"

#ifdef ONDEVICE_JNI_GENERATED_HEADER
// `javac -h` output for Translator.java and Understander.java: a native method
// whose Java declaration and C++ definition disagree fails to compile here.
#include "ai_ondevice_Translator.h"
#include "ai_ondevice_Understander.h"
#endif

namespace {

// A Java exception is pending in the JNIEnv: return to the JVM at once.
struct JavaPending {};

// Global references taken in JNI_OnLoad (a FindClass at throw time could run
// on a thread whose class loader does not see the app's classes).
jclass g_string = nullptr;
jclass g_ondevice_exception = nullptr;
jclass g_model_format_exception = nullptr;
jclass g_invalid_input_exception = nullptr;
jclass g_intent = nullptr;
jmethodID g_intent_init = nullptr;  // Intent(String, float, String, float, String, float, float[], float[], float[])

void check(JNIEnv* env) {
  if (env->ExceptionCheck()) throw JavaPending{};
}

void throw_java(JNIEnv* env, jclass cls, const char* message) {
  if (env->ExceptionCheck()) return;  // keep the first exception
  if (cls == nullptr || env->ThrowNew(cls, message) != 0) {
    // No class or ThrowNew itself failed (out of memory): something must be pending.
    if (!env->ExceptionCheck()) {
      jclass error = env->FindClass("java/lang/Error");
      if (error != nullptr) env->ThrowNew(error, message);
    }
  }
}

// Runs body(); returns its value, or fallback with a Java exception pending.
template <class T, class F>
T guard(JNIEnv* env, T fallback, F&& body) {
  try {
    return body();
  } catch (const JavaPending&) {
  } catch (const ondevice::FormatError& e) {
    throw_java(env, g_model_format_exception, e.what());
  } catch (const ondevice::ArgumentError& e) {
    throw_java(env, g_invalid_input_exception, e.what());
  } catch (const ondevice::Error& e) {
    throw_java(env, g_ondevice_exception, e.what());
  } catch (const std::bad_alloc&) {
    throw_java(env, g_ondevice_exception, "out of native memory (std::bad_alloc)");
  } catch (const std::exception& e) {
    throw_java(env, g_ondevice_exception, e.what());
  } catch (...) {
    throw_java(env, g_ondevice_exception, "unknown native exception");
  }
  return fallback;
}

// Standard UTF-8 of a Java string; `what` names it in error messages. A string
// longer than `max_bytes` bytes is rejected before it is converted (each UTF-16
// unit is at least one UTF-8 byte), so a huge string costs no huge buffer.
std::string to_utf8(JNIEnv* env, jstring s, const std::string& what, size_t max_bytes) {
  const jsize n = env->GetStringLength(s);
  check(env);
  if (size_t(n) > max_bytes)
    throw ondevice::ArgumentError(what + "input of at least " + std::to_string(n) +
                                  " bytes is longer than the limit of " + std::to_string(max_bytes) + " bytes");
  std::vector<jchar> units(static_cast<size_t>(n));
  if (n > 0) env->GetStringRegion(s, 0, n, units.data());
  check(env);
  std::string out;
  out.reserve(size_t(n) + size_t(n) / 2);
  for (size_t i = 0; i < units.size(); ++i) {
    uint32_t c = units[i];
    if (c >= 0xD800 && c <= 0xDBFF) {
      if (i + 1 < units.size() && units[i + 1] >= 0xDC00 && units[i + 1] <= 0xDFFF) {
        c = 0x10000 + ((c - 0xD800) << 10) + (uint32_t(units[i + 1]) - 0xDC00);
        ++i;
      } else {
        throw ondevice::ArgumentError(what + "unpaired UTF-16 surrogate at index " + std::to_string(i) +
                                      " (not valid Unicode)");
      }
    } else if (c >= 0xDC00 && c <= 0xDFFF) {
      throw ondevice::ArgumentError(what + "unpaired UTF-16 surrogate at index " + std::to_string(i) +
                                    " (not valid Unicode)");
    }
    if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += char(0xC0 | (c >> 6));
      out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += char(0xE0 | (c >> 12));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    } else {
      out += char(0xF0 | (c >> 18));
      out += char(0x80 | ((c >> 12) & 0x3F));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// A Java string from UTF-8. The runtime only produces valid UTF-8; should a
// byte sequence be invalid anyway, it becomes U+FFFD rather than a failure.
jstring to_java(JNIEnv* env, const std::string& s) {
  std::vector<jchar> units;
  units.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b = p[i];
    uint32_t c = 0xFFFD;
    size_t len = 1;
    auto cont = [&](size_t k) { return i + k < n && (p[i + k] & 0xC0) == 0x80; };
    if (b < 0x80) {
      c = b;
    } else if (b >= 0xC2 && b <= 0xDF && cont(1)) {
      c = (uint32_t(b & 0x1F) << 6) | (p[i + 1] & 0x3F);
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF && cont(1) && cont(2)) {
      const uint32_t v = (uint32_t(b & 0x0F) << 12) | (uint32_t(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
      if (v >= 0x800 && (v < 0xD800 || v > 0xDFFF)) {
        c = v;
        len = 3;
      }
    } else if (b >= 0xF0 && b <= 0xF4 && cont(1) && cont(2) && cont(3)) {
      const uint32_t v = (uint32_t(b & 0x07) << 18) | (uint32_t(p[i + 1] & 0x3F) << 12) |
                         (uint32_t(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
      if (v >= 0x10000 && v <= 0x10FFFF) {
        c = v;
        len = 4;
      }
    }
    i += len;
    if (c < 0x10000) {
      units.push_back(jchar(c));
    } else {
      units.push_back(jchar(0xD800 + ((c - 0x10000) >> 10)));
      units.push_back(jchar(0xDC00 + ((c - 0x10000) & 0x3FF)));
    }
  }
  jstring out = env->NewString(units.data(), jsize(units.size()));
  check(env);
  return out;
}

const ondevice::Translator* translator_of(jlong handle) {
  if (handle == 0) throw ondevice::Error("the Translator is closed");  // Java checks first
  return reinterpret_cast<const ondevice::Translator*>(static_cast<intptr_t>(handle));
}

const ondevice::Understander* understander_of(jlong handle) {
  if (handle == 0) throw ondevice::Error("the Understander is closed");  // Java checks first
  return reinterpret_cast<const ondevice::Understander*>(static_cast<intptr_t>(handle));
}

jfloatArray to_java(JNIEnv* env, const std::vector<float>& v) {
  jfloatArray a = env->NewFloatArray(jsize(v.size()));
  check(env);
  if (!v.empty()) env->SetFloatArrayRegion(a, 0, jsize(v.size()), v.data());
  check(env);
  return a;
}

jclass global_class(JNIEnv* env, const char* name) {
  jclass local = env->FindClass(name);
  if (local == nullptr) return nullptr;
  auto global = static_cast<jclass>(env->NewGlobalRef(local));
  env->DeleteLocalRef(local);
  return global;
}

}  // namespace

extern "C" {

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM* vm, void* /*reserved*/) {
  JNIEnv* env = nullptr;
  if (vm->GetEnv(reinterpret_cast<void**>(&env), JNI_VERSION_1_6) != JNI_OK) return JNI_ERR;
  const struct {
    jclass* slot;
    const char* name;
  } classes[] = {{&g_string, "java/lang/String"},
                 {&g_ondevice_exception, "ai/ondevice/OndeviceException"},
                 {&g_model_format_exception, "ai/ondevice/ModelFormatException"},
                 {&g_invalid_input_exception, "ai/ondevice/InvalidInputException"},
                 {&g_intent, "ai/ondevice/Intent"}};
  for (const auto& c : classes) {
    *c.slot = global_class(env, c.name);
    if (*c.slot == nullptr) {
      // The library was loaded by a class loader that does not see the Java
      // API (or R8 renamed it: keep ai.ondevice.**). The VM turns JNI_ERR into
      // an UnsatisfiedLinkError; stderr says why (Android discards stderr).
      env->ExceptionClear();
      std::fprintf(stderr, "libondevice_jni: class %s not found by the loading class loader\n", c.name);
      return JNI_ERR;
    }
  }
  g_intent_init = env->GetMethodID(g_intent, "<init>",
                                   "(Ljava/lang/String;FLjava/lang/String;FLjava/lang/String;F[F[F[F)V");
  if (g_intent_init == nullptr) {
    env->ExceptionClear();
    std::fprintf(stderr, "libondevice_jni: ai.ondevice.Intent has no matching constructor\n");
    return JNI_ERR;
  }
  return JNI_VERSION_1_6;
}

JNIEXPORT jlong JNICALL Java_ai_ondevice_Translator_nativeCreate(JNIEnv* env, jclass, jstring model_dir,
                                                                  jint threads) {
  return guard(env, jlong(0), [&]() -> jlong {
    if (model_dir == nullptr) throw ondevice::ArgumentError("model directory is null");
    ondevice::TranslatorOptions options;
    options.threads = int(threads);
    const std::string dir = to_utf8(env, model_dir, "model directory: ", 1u << 16);
    auto* t = new ondevice::Translator(dir, options);
    return static_cast<jlong>(reinterpret_cast<intptr_t>(t));
  });
}

JNIEXPORT jobjectArray JNICALL Java_ai_ondevice_Translator_nativeTranslateBatch(JNIEnv* env, jclass, jlong handle,
                                                                                 jobjectArray sentences,
                                                                                 jint beam_size) {
  return guard(env, static_cast<jobjectArray>(nullptr), [&]() -> jobjectArray {
    const ondevice::Translator* t = translator_of(handle);
    if (sentences == nullptr) throw ondevice::ArgumentError("sentences is null");
    const jsize n = env->GetArrayLength(sentences);
    check(env);
    std::vector<std::string> inputs;
    inputs.reserve(size_t(n));
    for (jsize i = 0; i < n; ++i) {
      auto s = static_cast<jstring>(env->GetObjectArrayElement(sentences, i));
      check(env);
      const std::string what = "sentence " + std::to_string(i) + ": ";
      if (s == nullptr) throw ondevice::ArgumentError(what + "null");
      try {
        inputs.push_back(to_utf8(env, s, what, ondevice::kMaxInputBytes));
      } catch (...) {
        env->DeleteLocalRef(s);
        throw;
      }
      env->DeleteLocalRef(s);
    }
    ondevice::TranslateOptions options;
    options.beam_size = int(beam_size);
    const std::vector<std::string> outputs = t->translate_batch(inputs, options);
    if (outputs.size() != inputs.size()) throw ondevice::Error("the runtime returned a wrong number of translations");
    jobjectArray result = env->NewObjectArray(n, g_string, nullptr);
    check(env);
    for (jsize i = 0; i < n; ++i) {
      jstring s = to_java(env, outputs[size_t(i)]);
      env->SetObjectArrayElement(result, i, s);
      env->DeleteLocalRef(s);
      check(env);
    }
    return result;
  });
}

JNIEXPORT void JNICALL Java_ai_ondevice_Translator_nativeDestroy(JNIEnv* env, jclass, jlong handle) {
  guard(env, 0, [&]() -> int {
    delete reinterpret_cast<ondevice::Translator*>(static_cast<intptr_t>(handle));
    return 0;
  });
}

JNIEXPORT jlong JNICALL Java_ai_ondevice_Understander_nativeCreate(JNIEnv* env, jclass, jstring model_dir,
                                                                    jint threads) {
  return guard(env, jlong(0), [&]() -> jlong {
    if (model_dir == nullptr) throw ondevice::ArgumentError("model directory is null");
    ondevice::UnderstanderOptions options;
    options.threads = int(threads);
    const std::string dir = to_utf8(env, model_dir, "model directory: ", 1u << 16);
    auto* u = new ondevice::Understander(dir, options);
    return static_cast<jlong>(reinterpret_cast<intptr_t>(u));
  });
}

JNIEXPORT jlongArray JNICALL Java_ai_ondevice_Understander_nativeLimits(JNIEnv* env, jclass, jlong handle) {
  return guard(env, static_cast<jlongArray>(nullptr), [&]() -> jlongArray {
    const ondevice::Understander* u = understander_of(handle);
    const jlong v[2] = {jlong(u->min_samples()), jlong(u->max_samples())};
    jlongArray a = env->NewLongArray(2);
    check(env);
    env->SetLongArrayRegion(a, 0, 2, v);
    check(env);
    return a;
  });
}

JNIEXPORT jobjectArray JNICALL Java_ai_ondevice_Understander_nativeLabels(JNIEnv* env, jclass, jlong handle,
                                                                           jint slot) {
  return guard(env, static_cast<jobjectArray>(nullptr), [&]() -> jobjectArray {
    const ondevice::Understander* u = understander_of(handle);
    const auto& names = ondevice::Understander::slot_names();
    if (slot < 0 || size_t(slot) >= names.size()) throw ondevice::ArgumentError("no slot " + std::to_string(slot));
    const std::vector<std::string>& labels = u->labels(names[size_t(slot)]);
    jobjectArray result = env->NewObjectArray(jsize(labels.size()), g_string, nullptr);
    check(env);
    for (size_t i = 0; i < labels.size(); ++i) {
      jstring s = to_java(env, labels[i]);
      env->SetObjectArrayElement(result, jsize(i), s);
      env->DeleteLocalRef(s);
      check(env);
    }
    return result;
  });
}

// The manifest's valid intents: String[n][3] (action, object, location);
// String[0][] when it lists none.
JNIEXPORT jobjectArray JNICALL Java_ai_ondevice_Understander_nativeIntents(JNIEnv* env, jclass, jlong handle) {
  return guard(env, static_cast<jobjectArray>(nullptr), [&]() -> jobjectArray {
    const ondevice::Understander* u = understander_of(handle);
    const auto& intents = u->intents();
    jclass string_array = env->FindClass("[Ljava/lang/String;");
    check(env);
    jobjectArray result = env->NewObjectArray(jsize(intents.size()), string_array, nullptr);
    env->DeleteLocalRef(string_array);
    check(env);
    for (size_t i = 0; i < intents.size(); ++i) {
      jobjectArray triple = env->NewObjectArray(3, g_string, nullptr);
      check(env);
      for (jsize k = 0; k < 3; ++k) {
        jstring s = to_java(env, intents[i][size_t(k)]);
        env->SetObjectArrayElement(triple, k, s);
        env->DeleteLocalRef(s);
        check(env);
      }
      env->SetObjectArrayElement(result, jsize(i), triple);
      env->DeleteLocalRef(triple);
      check(env);
    }
    return result;
  });
}

JNIEXPORT jobject JNICALL Java_ai_ondevice_Understander_nativeUnderstand(JNIEnv* env, jclass, jlong handle,
                                                                         jfloatArray pcm) {
  return guard(env, static_cast<jobject>(nullptr), [&]() -> jobject {
    const ondevice::Understander* u = understander_of(handle);
    if (pcm == nullptr) throw ondevice::ArgumentError("audio is null");
    const jsize n = env->GetArrayLength(pcm);
    check(env);
    u->check_length(size_t(n));  // before copying: a huge array costs nothing
    std::vector<float> samples(static_cast<size_t>(n));
    if (n > 0) env->GetFloatArrayRegion(pcm, 0, n, samples.data());
    check(env);
    const ondevice::IntentResult r = u->understand(samples.data(), samples.size());
    if (r.slots.size() != 3) throw ondevice::Error("the runtime returned a wrong number of slots");
    jstring labels[3] = {nullptr, nullptr, nullptr};
    jfloatArray logits[3] = {nullptr, nullptr, nullptr};
    auto release = [&] {
      for (int i = 0; i < 3; ++i) {
        if (labels[i] != nullptr) env->DeleteLocalRef(labels[i]);
        if (logits[i] != nullptr) env->DeleteLocalRef(logits[i]);
      }
    };
    jobject intent = nullptr;
    try {
      for (int i = 0; i < 3; ++i) {
        labels[i] = to_java(env, r.slots[size_t(i)].label);
        logits[i] = to_java(env, r.slots[size_t(i)].logits);
      }
      intent = env->NewObject(g_intent, g_intent_init, labels[0], jfloat(r.slots[0].probability), labels[1],
                              jfloat(r.slots[1].probability), labels[2], jfloat(r.slots[2].probability), logits[0],
                              logits[1], logits[2]);
      check(env);
    } catch (...) {
      release();
      throw;
    }
    release();
    return intent;
  });
}

JNIEXPORT void JNICALL Java_ai_ondevice_Understander_nativeDestroy(JNIEnv* env, jclass, jlong handle) {
  guard(env, 0, [&]() -> int {
    delete reinterpret_cast<ondevice::Understander*>(static_cast<intptr_t>(handle));
    return 0;
  });
}

}  // extern "C"
