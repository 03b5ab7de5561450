# cmake -DSTRIP=<strip> -DIN=<lib> -DOUT=<stripped lib> -P strip_and_report.cmake
# Writes a stripped copy of the JNI library (what an app ships in
# jniLibs/<abi>/) and prints both sizes.
execute_process(COMMAND "${STRIP}" --strip-unneeded -o "${OUT}" "${IN}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${STRIP} failed on ${IN}")
endif()
file(SIZE "${IN}" unstripped)
file(SIZE "${OUT}" stripped)
math(EXPR kib "(${stripped} + 1023) / 1024")
message(STATUS "libondevice_jni.so: ${stripped} bytes stripped (${kib} KiB), ${unstripped} unstripped -> ${OUT}")
