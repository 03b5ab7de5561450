"""Audio input of spoken-language understanding: a file or an array -> 16 kHz mono float32.

The SLU model (``ondevice understand`` / ``ondevice.Understander``) was trained on the corpus of
``ondevice data slu``: 16 kHz mono utterances of a few seconds. Whatever a user hands in (a phone's
48 kHz stereo recording, an 8 kHz telephone WAV, a FLAC file, a NumPy array) is brought to that form
here, or refused with an :class:`~ondevice.errors.AudioError` that names the file and what is wrong,
never a crash or a silent misreading:

    read_audio(path)                   -> (float32 [frames, channels] in [-1, 1], sample_rate)
    to_model_input(samples, rate)      -> float32 [n] mono at TARGET_RATE
    load_audio(path_or_array, rate)    -> the two above in one call

**Why WAV is read without soundfile.** WAV is what recorders and the corpus write, and an on-device
runtime should read it with no native dependency: integer PCM (8/16/24/32-bit) goes through the
standard library's :mod:`wave`; IEEE float (32/64-bit) and WAVE_FORMAT_EXTENSIBLE files, which
:mod:`wave` refuses (before Python 3.12), through a small RIFF chunk reader here that is also the
fallback whenever :mod:`wave` rejects a file, so that its errors (truncated, no ``data`` chunk,
unsupported sample width) say precisely what is wrong. FLAC, Ogg, MP3 and WAV codecs such as
µ-law/ADPCM go through ``soundfile`` (libsndfile), a dependency of the package; without it such a
file gives an AudioError saying which package to install.

**Streams.** A binary file object (``sys.stdin.buffer``: ``ondevice understand -``) and any path
that is not a regular file (a pipe, ``/dev/stdin``, a device) are copied to a temporary file (at
most ``MAX_STREAM_BYTES``) and read like a file. A WAV written to a pipe carries a placeholder data
size (its writer could not seek back to fill it in); the samples then run to the end of the file.

**Why the resampler is written here.** SciPy is not a dependency and torch must not be needed at
inference, so :func:`resample` is a windowed-sinc polyphase resampler in NumPy: the rational ratio
``new/orig`` reduced by their gcd gives ``new/gcd`` filter phases; each output sample is the input
convolved with a Kaiser-windowed sinc low-pass (cut-off ``ROLLOFF`` x the lower Nyquist frequency,
``LOWPASS_ZEROS`` zero crossings each side) sampled at that output's fractional position. This is
the kernel of ``torchaudio.functional.resample(..., resampling_method="sinc_interp_kaiser")`` with the
same parameters, including zero padding at both ends and the output length
``ceil(n * new / orig)``, so the two agree to float32 rounding (measured: max |difference| <= 3e-5 on
sines and noise at 8..96 kHz; tests/test_slu_audio.py checks it where torchaudio is importable, and
checks the polyphase bookkeeping against a direct evaluation of the sum everywhere). Deterministic:
no randomness, no dither, the same output for the same input. 30 s of 48 kHz audio resamples in
about 20 ms on one core.

**Limits** (checked from a file's header before any sample is decoded, so a huge or lying file is
refused without costing memory; in this order: sample rate, channels, a data size beyond the end of
the file, length): sample rates ``MIN_RATE``..``MAX_RATE`` Hz, at most ``MAX_CHANNELS`` channels, at
most ``MAX_SECONDS`` (30 s; spoken commands last a few seconds and the model's positional table is
bounded), at least ``MIN_SECONDS`` (0.1 s: shorter input cannot hold a word). Silent input (all
zeros) is accepted: whether it holds a command is the model's decision, not the reader's. Clipped
input (samples at +-1) and float input beyond +-1 are passed through unchanged: clipping distorts
speech but usually leaves it intelligible, and rescaling would change what the user recorded. Only
samples beyond +-``MAX_ABS_SAMPLE`` are refused: no PCM encoding reaches them (a float WAV full of
them is garbage), and the model's level normalisation squares the samples, which overflows float32
on such values.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import tempfile
import wave
from typing import BinaryIO, Union

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import AudioError

#: The model's sample rate (that of the ``ondevice data slu`` corpus).
TARGET_RATE = 16000
#: Longest accepted input, seconds: commands take a few seconds, and the model's position table is
#: bounded; longer input is rejected (trim it to the command), never silently cut.
MAX_SECONDS = 30.0
#: Shortest accepted input, seconds (1,600 samples at 16 kHz): shorter cannot hold a spoken word.
MIN_SECONDS = 0.1
#: Accepted sample rates, Hz: from narrow-band telephony's neighbourhood to studio 384 kHz.
MIN_RATE = 4000
MAX_RATE = 384000
#: Most channels read from a file (ambisonic and array recordings have up to a few dozen): with the
#: length limit this bounds the memory a file's header can ask for.
MAX_CHANNELS = 64
#: Largest accepted |sample| (2^31, the scale of 32-bit integer PCM): beyond it no recording lies,
#: and the model's per-utterance level normalisation (a sum of squares in float32) could overflow.
MAX_ABS_SAMPLE = 2.0 ** 31
#: Most bytes read from a file object (standard input), a pipe or a device before it is refused: a
#: stream has no size to check first; 256 MiB is more than 30 s of 96 kHz 8-channel float64 audio.
MAX_STREAM_BYTES = 256 << 20

#: Resampler design (see the module docstring). 16 zero crossings each side with a Kaiser window of
#: beta 8.6 (about -86 dB side lobes) and a cut-off at 0.92 of the lower Nyquist frequency: for
#: 48 kHz -> 16 kHz (106 taps) the response is flat to 0.01 dB up to 6.2 kHz, -6 dB at 7.36 kHz,
#: -24 dB at 8 kHz and below -80 dB from 8.6 kHz on: what aliases is a sliver just above the 8 kHz
#: Nyquist frequency, folded onto 7.4-8 kHz where speech has little energy.
LOWPASS_ZEROS = 16
ROLLOFF = 0.92
KAISER_BETA = 8.6

PathLike = Union[str, "os.PathLike[str]"]

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The 14 bytes after the 2-byte format tag in a KSDATAFORMAT_SUBTYPE_* GUID (PCM, IEEE_FLOAT, ...).
_KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# Data sizes that a WAV writer leaves in the header when it writes to a pipe and cannot seek back to
# fill in the real one (espeak-ng: 0x7FFFF000; sox: the same rounded down to whole frames, e.g.
# 0x7FFFEFFC for 6-byte frames; others: 0x7FFFFFFF, 0xFFFFFFFF). They carry no length: the samples
# run to the end of the file, as libsndfile reads them.
_STREAMING_DATA_SIZES = (0x7FFFF000, 0x7FFFFFFF, 0xFFFFFFFF)
# A 'fmt ' chunk is 16, 18 or 40 bytes; anything far larger is a corrupt header, not a format.
_MAX_FMT_CHUNK = 1024
# Magic numbers of formats soundfile reads, to name the package a missing soundfile would need.
_MAGIC = ((b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"ID3", "MP3"), (b"\xff\xfb", "MP3"), (b"\xff\xf3", "MP3"),
          (b"FORM", "AIFF"), (b"RF64", "RF64 WAV"), (b"RIFX", "big-endian WAV"), (b".snd", "AU"),
          (b"caff", "CAF"), (b"riff", "Sony Wave64"))


# ------------------------------------------------------------------------------------------ reading
def read_audio(path: PathLike | BinaryIO, *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file: ``(samples, sample_rate)``, samples float32 ``[frames, channels]``.

    ``path`` may also be a binary file object (``sys.stdin.buffer``, ``io.BytesIO``, a socket's
    ``makefile("rb")``), read to its end; so is a path that is not a regular file (a pipe,
    ``/dev/stdin``, a device). Such a stream has no size to check first and may not seek: it is
    copied to a temporary file, at most MAX_STREAM_BYTES, and read from there; messages name the
    stream (:func:`source_name`).

    Integer PCM is scaled to [-1, 1) (16-bit by 1/32768, 8-bit unsigned around 128); float WAVs are
    returned as stored (normally within [-1, 1]). No resampling or downmixing happens here: that is
    :func:`to_model_input`, so callers can inspect the file's samples as they are. The header
    limits hold here already (module docstring): a rate outside MIN_RATE..MAX_RATE and more than
    MAX_CHANNELS channels are refused before decoding, with or without ``max_seconds``.

    ``max_seconds``: refuse a longer file from its header, before decoding it (what
    :func:`load_audio` does with ``MAX_SECONDS``, so a 2-hour recording costs no memory).

    Raises AudioError (the message names the file) for a missing file, a directory, an empty file,
    a file that is not audio, a truncated WAV, FLAC or Ogg file (a WAV header promising more data
    than the file holds, a FLAC stream that breaks off, an Ogg file cut inside a page: refused
    rather than decoded in part, since a cut-off command could be misheard as another; an Ogg file
    cut exactly between two pages cannot be told from a recording stopped there and is read),
    a WAV without frames, an unsupported sample width or encoding, a sample rate or channel count
    out of range, and NaN, infinite or beyond-MAX_ABS_SAMPLE samples.
    """
    if hasattr(path, "read"):
        return _read_stream(path, source_name(path), max_seconds)
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError(f"{p}: no such file") from None
    except OSError as e:
        raise AudioError(f"{p}: cannot open ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{p}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):  # /dev/stdin, a FIFO, <(sox ...), a device: no size, maybe no seek
        try:
            f = open(p, "rb")
        except OSError as e:
            raise AudioError(f"{p}: cannot read ({e.strerror or e})") from None
        with f:
            return _read_stream(f, p, max_seconds)
    try:
        with open(p, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise AudioError(f"{p}: cannot read ({e.strerror or e})") from None
    if not head:
        raise AudioError(f"{p}: empty file (0 bytes), not audio")
    if head.startswith(b"RIFF"):
        if len(head) < 12:
            raise AudioError(f"{p}: truncated WAV: the file ends inside its 12-byte RIFF header")
        if head[8:12] == b"WAVE":
            samples, rate = _read_wav(p, st.st_size, max_seconds)
            return _finite(samples, p), rate
    samples, rate = _read_soundfile(p, head, max_seconds)
    return _finite(samples, p), rate


def source_name(source) -> str:
    """How messages name an audio source: a path as given, a file object by its ``name`` (``<stdin>``
    for ``sys.stdin.buffer``), an array as ``audio``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return name if isinstance(name, str) else f"<fd {name}>" if isinstance(name, int) else "<stream>"
    return "audio"


def _read_stream(stream: BinaryIO, name: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Audio from a stream that has no size and may not seek: copied (at most MAX_STREAM_BYTES) to a
    temporary file, which is then read like any file; messages name the stream, not the copy."""
    with tempfile.TemporaryDirectory(prefix="ondevice-audio-") as d:
        copy = os.path.join(d, "stream")
        with open(copy, "wb") as out:
            total = 0
            while True:
                try:
                    chunk = stream.read(1 << 20)
                except OSError as e:
                    raise AudioError(f"{name}: cannot read ({e.strerror or e})") from None
                if not chunk:
                    break
                if isinstance(chunk, str):
                    raise TypeError(f"{name} is a text stream: pass a binary one (e.g. sys.stdin.buffer)")
                total += len(chunk)
                if total > MAX_STREAM_BYTES:
                    raise AudioError(f"{name}: more than {MAX_STREAM_BYTES >> 20} MiB arrived from this stream, "
                                     "far more than a spoken command; send one command")
                try:
                    out.write(chunk)
                except OSError as e:
                    raise AudioError(f"{name}: cannot hold the stream in a temporary file in "
                                     f"{tempfile.gettempdir()} ({e.strerror or e})") from None
        try:
            return read_audio(copy, max_seconds=max_seconds)
        except AudioError as e:
            msg = str(e)
            raise AudioError(name + msg[len(copy):] if msg.startswith(copy) else msg) from None


def _read_wav(p: str, size: int, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Integer PCM through :mod:`wave`; whatever it refuses (float, EXTENSIBLE, damage) goes to
    :func:`_read_riff`, which reads float and EXTENSIBLE and diagnoses the rest."""
    try:
        with wave.open(p, "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if not (1 <= width <= 4 and channels >= 1 and rate >= 1 and frames >= 1):
                return _read_riff(p, size, max_seconds)  # which names the problem
            if frames * channels * width > size - 44:  # 44: the canonical header; more with other chunks
                return _read_riff(p, size, max_seconds)  # maybe truncated: it checks exactly, before the length
            _check_header(p, frames, rate, channels, max_seconds)
            raw = w.readframes(frames)
    except AudioError:
        raise
    except (wave.Error, EOFError, struct.error, ZeroDivisionError, RuntimeError, ValueError, OverflowError):
        # wave.Error: 'unknown format: 3' (float), 65534 (EXTENSIBLE), a bad header; EOFError and
        # struct.error: the header is cut off; ZeroDivisionError: 0 channels (Python < 3.12);
        # RuntimeError/ValueError/OverflowError: chunk sizes that point outside the file (found by
        # the mutation test). The RIFF walker reads or diagnoses all of these.
        return _read_riff(p, size, max_seconds)
    expected = frames * channels * width
    if len(raw) < expected:
        raise AudioError(f"{p}: truncated WAV: the header declares {frames} frames ({expected} bytes of "
                         f"samples) but the file holds only {len(raw)} bytes of them")
    return _decode_pcm(raw, width, channels), rate


def _read_riff(p: str, size: int, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Walk the RIFF chunks: 'fmt ' (format tag, channels, rate, bits) and 'data' (where the samples
    lie). The RIFF size field is not trusted (streaming writers leave it 0 or 0xFFFFFFFF); chunk sizes
    are, and one that runs past the end of the file means a truncated file."""
    fmt = None
    data_at = data_size = None
    with open(p, "rb") as f:
        f.seek(12)
        pos = 12
        while True:
            header = f.read(8)
            if not header:
                break
            if len(header) < 8:
                raise AudioError(f"{p}: truncated WAV: the file ends inside a chunk header at byte {pos}")
            chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk_id == b"data":
                data_at, data_size = pos + 8, chunk_size
                break
            if chunk_id == b"fmt ":
                if chunk_size > _MAX_FMT_CHUNK:
                    raise AudioError(f"{p}: not a valid WAV file: its 'fmt ' chunk claims {chunk_size} bytes")
                fmt = f.read(chunk_size)
                if len(fmt) < chunk_size:
                    raise AudioError(f"{p}: truncated WAV: the file ends inside its 'fmt ' chunk")
                f.seek(chunk_size & 1, os.SEEK_CUR)
            else:
                f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)
            pos += 8 + chunk_size + (chunk_size & 1)
        if fmt is None:
            if pos > size:
                raise AudioError(f"{p}: truncated WAV: a chunk runs past the end of the file ({size} bytes)")
            raise AudioError(f"{p}: not a valid WAV file: no 'fmt ' chunk before the samples")
        if data_at is None:
            if pos > size:
                raise AudioError(f"{p}: truncated WAV: a chunk runs past the end of the file ({size} bytes) "
                                 "and no 'data' chunk was found")
            raise AudioError(f"{p}: not a valid WAV file: it has no 'data' chunk")
        if len(fmt) < 16:
            raise AudioError(f"{p}: not a valid WAV file: its 'fmt ' chunk has {len(fmt)} bytes, fewer than 16")
        tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _WAVE_FORMAT_EXTENSIBLE:
            if len(fmt) < 40 or fmt[26:40] != _KSDATAFORMAT_TAIL:
                return _read_soundfile(p, b"", max_seconds, what="WAVE_FORMAT_EXTENSIBLE WAV with this sub-format")
            tag = struct.unpack("<H", fmt[24:26])[0]
        if tag == _WAVE_FORMAT_PCM:
            width, kind = (bits + 7) // 8, "integer PCM"
            if not 1 <= width <= 4:
                raise AudioError(f"{p}: unsupported WAV sample width: {bits}-bit integer PCM "
                                 "(8, 16, 24 and 32-bit are read)")
        elif tag == _WAVE_FORMAT_IEEE_FLOAT:
            width, kind = bits // 8, "float"
            if bits not in (32, 64):
                raise AudioError(f"{p}: unsupported WAV sample width: {bits}-bit float (32 and 64-bit are read)")
        else:
            return _read_soundfile(p, b"", max_seconds, what=f"WAV with format tag 0x{tag:04x}")
        if channels < 1:
            raise AudioError(f"{p}: not a valid WAV file: its header says 0 channels")
        if rate < 1:
            raise AudioError(f"{p}: not a valid WAV file: its header says a sample rate of 0 Hz")
        frame_bytes = channels * width
        if block_align not in (0, frame_bytes):
            raise AudioError(f"{p}: not a valid WAV file: block align {block_align} for {channels} channel(s) "
                             f"of {width}-byte {kind} samples (expected {frame_bytes})")
        placeholders = {z - k * (z % frame_bytes) for z in _STREAMING_DATA_SIZES for k in (0, 1)}
        if data_at + data_size > size and data_size in placeholders:
            data_size = max(size - data_at, 0)
        frames = data_size // frame_bytes
        if frames == 0:
            raise AudioError(f"{p}: WAV has no audio frames (its 'data' chunk holds {data_size} bytes)")
        _check_format(p, rate, channels)
        if data_at + data_size > size:
            raise AudioError(f"{p}: truncated WAV: the header declares {frames} frames ({data_size} bytes of "
                             f"samples) but the file holds only {max(size - data_at, 0)} bytes of them")
        _check_length(p, frames, rate, max_seconds)
        f.seek(data_at)
        raw = f.read(frames * frame_bytes)
    if kind == "float":
        samples = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").reshape(frames, channels)
        return samples.astype(np.float32), rate
    return _decode_pcm(raw, width, channels), rate


def _decode_pcm(raw: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian integer PCM -> float32 [frames, channels] in [-1, 1) (full scale 2^(bits-1);
    8-bit WAV is unsigned with its zero at 128)."""
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) * np.float32(1 / 128)
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) * np.float32(1 / 32768)
    elif width == 3:
        # Place each 3-byte sample in the top three bytes of an int32: sign-correct, scale 2^31.
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        wide = np.zeros((len(b), 4), dtype=np.uint8)
        wide[:, 1:] = b
        x = wide.view("<i4").reshape(-1).astype(np.float32) * np.float32(2.0 ** -31)
    else:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) * np.float32(2.0 ** -31)
    return x.reshape(-1, channels)


def _read_soundfile(p: str, head: bytes, max_seconds: float | None, what: str | None = None
                    ) -> tuple[np.ndarray, int]:
    """Everything but plain PCM/float WAV: libsndfile through the soundfile package."""
    try:
        import soundfile as sf
    except (ImportError, OSError):  # OSError: the package is there but libsndfile cannot be loaded
        kind = what or next((name for magic, name in _MAGIC if head.startswith(magic)), None)
        if kind is None:
            raise AudioError(f"{p}: not a WAV file, and reading other audio formats (FLAC, Ogg, MP3) needs the "
                             "'soundfile' package: pip install soundfile") from None
        raise AudioError(f"{p}: reading {kind} files needs the 'soundfile' package: pip install soundfile "
                         "(WAV with integer or float PCM needs nothing)") from None
    if head.startswith(b"OggS"):
        _check_ogg_pages(p)
    try:
        info = sf.info(p)
    except sf.SoundFileError as e:
        reason = _libsndfile_reason(e)
        kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
        if what:
            raise AudioError(f"{p}: unsupported {what} ({reason})") from None
        if kind:  # its magic number says what it may be: libsndfile could not make sense of the rest
            raise AudioError(f"{p}: cannot read this {kind} file: an unsupported codec, or a damaged or "
                             f"truncated file (libsndfile: {reason})") from None
        raise AudioError(f"{p}: not an audio file that can be read (neither WAV nor a format libsndfile "
                         f"recognises: {reason})") from None
    kind = what or f"{info.format} file"
    if info.frames < 1:  # an Ogg file cut inside a page has no last granule position to count from
        raise AudioError(f"{p}: no audio frames in this {kind} of {os.path.getsize(p):,} bytes "
                         "(empty, or truncated or corrupt)")
    if info.samplerate < 1:
        raise AudioError(f"{p}: not a valid audio file: sample rate {info.samplerate} Hz")
    _check_header(p, info.frames, info.samplerate, info.channels, max_seconds)
    samples = _decode_soundfile(sf, p, info, kind)
    if len(samples) == 0:
        raise AudioError(f"{p}: no audio frames")
    return samples, int(info.samplerate)


def _check_ogg_pages(p: str) -> None:
    """Refuses an Ogg file that is cut short or has a damaged page. libsndfile counts an Ogg file's
    frames from its last complete page, so a file cut at 70 % reads without error as the first
    half of the command; every page header is walked instead (27 bytes + its segment table, a few
    hundred pages for 30 s), and a page that runs past the end of the file is a truncated file.
    Bytes after the end-of-stream page that hold no further page (padding, a ``TAG`` block) are
    ignored, as libsndfile ignores them. A stream without its end-of-stream flag is accepted when
    it ends in a whole page (recorders stopped early and live captures leave the flag out, and
    libsndfile reads such files whole), so a file cut exactly between two pages is not detected."""
    size = os.path.getsize(p)
    pos, flags = 0, 0
    with open(p, "rb") as f:
        while pos < size:
            f.seek(pos)
            fixed = f.read(27)  # "OggS", version, flags, granule position, serial, sequence, CRC, segments
            if not fixed.startswith(b"OggS") and not (len(fixed) < 4 and b"OggS".startswith(fixed)):
                f.seek(pos + 1)
                if _find(f, b"OggS") is not None:
                    raise AudioError(f"{p}: corrupt Ogg file: no page starts at byte {pos:,}, but a later one does")
                if flags & 0x04:
                    return  # bytes after the stream's last page
                raise AudioError(f"{p}: corrupt Ogg file: the bytes from {pos:,} on are not a page, and the "
                                 "page before them does not end the stream (a damaged last page?)")
            flags = fixed[5] if len(fixed) > 5 else 0
            segments = f.read(fixed[26]) if len(fixed) == 27 else b""
            if len(fixed) < 27 or len(segments) < fixed[26]:
                raise AudioError(f"{p}: truncated Ogg file: it ends inside the page header at byte {pos:,}")
            end = pos + 27 + len(segments) + sum(segments)
            if end > size:
                raise AudioError(f"{p}: truncated Ogg file: the page at byte {pos:,} needs {end - pos:,} bytes, "
                                 f"the file holds {size - pos:,} of them")
            pos = end


def _find(f, needle: bytes) -> int | None:
    """Offset of the first ``needle`` from ``f``'s position on (read in 1 MiB pieces), or None."""
    carry, at = b"", f.tell()
    while piece := f.read(1 << 20):
        k = (carry + piece).find(needle)
        if k >= 0:
            return at - len(carry) + k
        at += len(piece)
        carry = (carry + piece)[-(len(needle) - 1):]
    return None


def _libsndfile_reason(e: Exception) -> str:
    reason = getattr(e, "error_string", None) or str(e)
    return reason.removeprefix("Error : ").rstrip(".")


def _decode_soundfile(sf, p: str, info, kind: str) -> np.ndarray:
    """All frames of a file libsndfile has opened, decoded in blocks so that a file that breaks off
    (a FLAC cut short: "lost sync", "psf_fseek() failed") is reported with how far decoding got;
    a cut-off command is refused, not understood in part."""
    blocks, done = [], 0
    with sf.SoundFile(p) as f:
        while True:
            try:
                block = f.read(8192, dtype="float32", always_2d=True)  # the failure point within 0.2-1 s
            except sf.SoundFileError as e:
                raise AudioError(f"{p}: truncated or corrupt {kind}: decoding failed after "
                                 f"{done / info.samplerate:.2f} s of the {info.frames / info.samplerate:.2f} s "
                                 f"its header declares (libsndfile: {_libsndfile_reason(e)})") from None
            if len(block) == 0:
                break
            blocks.append(block)
            done += len(block)
    if not blocks:
        return np.zeros((0, info.channels), np.float32)
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)


def _check_header(p: str, frames: int, rate: int, channels: int, max_seconds: float | None) -> None:
    """A file's limits from its header, before its samples are read: rate first (a bogus rate makes
    a bogus duration), then channels, then the length."""
    _check_format(p, rate, channels)
    _check_length(p, frames, rate, max_seconds)


def _check_format(p: str, rate: int, channels: int) -> None:
    _check_rate(rate, p)
    if channels > MAX_CHANNELS:
        raise AudioError(f"{p}: {channels} channels; at most {MAX_CHANNELS} are read (a spoken command needs "
                         "one: e.g. sox in.wav out.wav remix 1)")


def _check_length(p: str, frames: int, rate: int, max_seconds: float | None) -> None:
    if max_seconds is not None and frames > max_seconds * rate:
        raise AudioError(_too_long(p, frames / rate, max_seconds))


def _too_long(where: str, seconds: float, limit: float) -> str:
    return (f"{where}: {seconds:.2f} s of audio is longer than the limit of {limit:g} s; trim it to the "
            f"spoken command (e.g. sox in.wav out.wav trim 0 {limit:g})")


def _finite(samples: np.ndarray, where: str) -> np.ndarray:
    """Refuse NaN and +-inf: they would propagate through every feature of the utterance; and
    samples beyond +-MAX_ABS_SAMPLE (module docstring)."""
    def first(bad: np.ndarray) -> tuple[int, float, int, int]:
        """How many, and the first one's value, frame and channel."""
        idx = np.flatnonzero(bad)
        frame, channel = divmod(int(idx[0]), samples.shape[1] if samples.ndim == 2 else 1)
        return len(idx), samples.reshape(-1)[idx[0]], frame, channel

    bad = ~np.isfinite(samples)
    if bad.any():
        n, value, frame, channel = first(bad)
        raise AudioError(f"{where}: {n} non-finite sample(s) (NaN or infinity); the first, {value}, is at "
                         f"frame {frame}, channel {channel}")
    huge = np.abs(samples) > MAX_ABS_SAMPLE
    if huge.any():
        n, value, frame, channel = first(huge)
        raise AudioError(f"{where}: {n} sample(s) beyond +-2^31, the first, {float(value):g}, at frame "
                         f"{frame}, channel {channel}: float audio is expected in [-1, 1], and no PCM encoding "
                         "reaches such values (a corrupt file, or samples that need scaling)")
    return samples


# ------------------------------------------------------------------------------------- conversion
def to_model_input(samples: np.ndarray, sample_rate: int, *, source: str = "audio") -> np.ndarray:
    """Samples at any accepted rate -> what the model reads: float32 1-D mono at TARGET_RATE.

    ``samples``: 1-D (mono) or 2-D ``[frames, channels]``; float (expected in [-1, 1]) or int16
    (scaled by 1/32768). Other integer types are refused rather than guessed at (is int32 24-bit
    audio in the low bits, or full-scale 32-bit?): scale them to float yourself. Channels are
    averaged (a recording's channels hold the same speech; averaging keeps its level). Rates other
    than 16 kHz go through :func:`resample`. Silent and clipped input pass through (module docstring).

    ``source`` names the input in error messages (:func:`load_audio` passes the file's path).
    Raises AudioError: empty, shorter than MIN_SECONDS, longer than MAX_SECONDS, non-finite values,
    a sample rate outside MIN_RATE..MAX_RATE, an unsupported dtype or shape.
    """
    rate = _check_rate(sample_rate, source)
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float32) * np.float32(1 / 32768)
    elif x.dtype.kind in "iu":
        raise AudioError(f"{source}: {x.dtype} samples are not accepted; pass float samples in [-1, 1] or "
                         f"int16 PCM (e.g. convert int32 PCM with x / 2**31)")
    elif x.dtype.kind != "f":
        raise AudioError(f"{source}: expected float or int16 samples, got an array of dtype {x.dtype}")
    elif x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    if x.ndim == 2 and x.shape[1] > x.shape[0] > 0:
        raise AudioError(f"{source}: got an array of shape {x.shape}: expected 1-D mono or [frames, channels] "
                         "(transpose a [channels, frames] array)")
    if x.ndim not in (1, 2):
        raise AudioError(f"{source}: expected 1-D mono or 2-D [frames, channels] samples, got shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{source}: empty audio (shape {x.shape}, no samples)")
    seconds = x.shape[0] / rate
    if seconds < MIN_SECONDS:
        raise AudioError(f"{source}: {seconds:.4g} s of audio ({x.shape[0]} samples at {rate} Hz) is shorter "
                         f"than the minimum of {MIN_SECONDS:g} s")
    if seconds > MAX_SECONDS:
        raise AudioError(_too_long(source, seconds, MAX_SECONDS))
    _finite(x, source)
    if x.ndim == 2:
        x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)
    y = resample(x, rate, TARGET_RATE)
    return np.ascontiguousarray(y, dtype=np.float32)


def _check_rate(sample_rate, where: str) -> int:
    numeric = (int, float, np.integer, np.floating)
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, numeric):
        raise AudioError(f"{where}: sample rate must be a number of Hz, got {sample_rate!r}")
    if not (math.isfinite(sample_rate) and float(sample_rate).is_integer()):
        raise AudioError(f"{where}: sample rate must be a whole number of Hz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{where}: sample rate {rate} Hz is outside the supported {MIN_RATE}..{MAX_RATE} Hz")
    return rate


def load_audio(path_or_array: PathLike | BinaryIO | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """A file or an array -> float32 1-D mono at TARGET_RATE, ready for the model.

    A path (str or os.PathLike) or a binary file object is decoded with :func:`read_audio` (its
    header gives the rate, so ``sample_rate`` must be left out) and refused from its header if
    longer than MAX_SECONDS.
    An array (anything :func:`to_model_input` takes) is at ``sample_rate`` Hz, which defaults to
    16000, the model's own rate: the common case of audio already prepared for the model needs no
    argument, and any other rate must be stated since it cannot be inferred from the samples.
    """
    if isinstance(path_or_array, (str, os.PathLike)) or hasattr(path_or_array, "read"):
        if sample_rate is not None:
            raise TypeError("sample_rate is for arrays only: a file's own header gives its sample rate")
        samples, rate = read_audio(path_or_array, max_seconds=MAX_SECONDS)
        # A file's layout is known ([frames, channels]): downmix here, so that the array-shape guess
        # of to_model_input (more channels than frames = a transposed array) cannot misfire on it.
        mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
        return to_model_input(mono, rate, source=source_name(path_or_array))
    if isinstance(path_or_array, (bytes, bytearray, memoryview)):
        raise TypeError("load_audio takes a path or an array of samples, not the bytes of a file "
                        "(write them to a file, or decode them first)")
    return to_model_input(path_or_array, TARGET_RATE if sample_rate is None else sample_rate)


# -------------------------------------------------------------------------------------- resampling
def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Windowed-sinc polyphase resampling of 1-D ``x`` from ``orig_rate`` to ``new_rate`` Hz.

    With ``up, down = new_rate/g, orig_rate/g`` (g their gcd), output ``j`` lies at input position
    ``j * down / up``; its weights are a Kaiser-windowed sinc low-pass at that fractional offset,
    which repeats every ``up`` outputs, so there are ``up`` phases of ``2 * K`` taps each. The input
    is taken as zero outside its ends; the output has ``ceil(len(x) * up / down)`` samples. The same
    rate returns ``x`` itself. Float32 input is computed in float32, float64 in float64.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"resample takes 1-D samples, got shape {x.shape}")
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate < 1 or new_rate < 1:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate or len(x) == 0:
        return x
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    x = np.ascontiguousarray(x, dtype=dtype)
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    cutoff = ROLLOFF * min(1.0, up / down)  # in units of the input's Nyquist frequency
    half = math.ceil(LOWPASS_ZEROS / cutoff)  # K: taps each side, in input samples
    taps = 2 * half
    n_out = -(-len(x) * up // down)
    # Output j reads xp[q_j : q_j + taps] with q_j = floor(j * down / up): input x[q_j - K + 1 ..
    # q_j + K] (K - 1 zeros before x; K + 1 after cover the last output's window).
    xp = np.concatenate([np.zeros(half - 1, dtype), x, np.zeros(half + 1, dtype)])
    step = xp.strides[0]
    y = np.empty(n_out, dtype)
    m = np.arange(-half + 1, half + 1, dtype=np.float64)
    i0_beta = np.i0(KAISER_BETA)
    chunk = max(1, (1 << 20) // taps)  # phases whose kernels are computed at once (<= ~8 MB)
    for first in range(0, min(up, n_out), chunk):
        phases = np.arange(first, min(first + chunk, up, n_out))
        offset = (phases * down) % up / up  # fractional input position of each phase
        u = cutoff * (m[None, :] - offset[:, None])  # distance in zero crossings of the sinc
        r = np.clip(1.0 - (u / LOWPASS_ZEROS) ** 2, 0.0, None)
        window = np.where(np.abs(u) < LOWPASS_ZEROS, np.i0(KAISER_BETA * np.sqrt(r)) / i0_beta, 0.0)
        kernels = (cutoff * np.sinc(u) * window).astype(dtype)
        for p, h in zip(phases.tolist(), kernels):
            count = (n_out - p + up - 1) // up  # outputs p, p + up, p + 2 up, ...
            start = p * down // up
            rows = as_strided(xp[start:], shape=(count, taps), strides=(down * step, step), writeable=False)
            y[p::up] = np.einsum("ij,j->i", rows, h)
    return y
