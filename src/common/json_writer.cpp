// Implementation of JsonWriter (json_writer.h): a streaming JSON serialiser
// whose output matches Python's json.dumps() defaults byte for byte.
//
// Owns the three formatting rules that make the output Python-compatible:
//   * strings: ensure_ascii escaping (\" \\ \n \r \t \b \f, everything else
//     outside 0x20..0x7E as lower-case \uXXXX, surrogate pairs above U+FFFF);
//     a byte that is not part of valid UTF-8 is escaped as the lone
//     surrogate \udcXX (Python's "surrogateescape"), which
//     json_string_bytes() turns back into the byte;
//   * floats: float.__repr__ (shortest round-trip digits, exponent form only
//     when the decimal exponent is < -4 or >= 16, ".0" on integral values,
//     NaN / Infinity / -Infinity as json.dumps writes them);
//   * separators ", " between items and ": " after keys.
// Structural misuse (a value without a key inside an object, unbalanced
// end_*) is the caller's bug and is not diagnosed.
#include "common/json_writer.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

namespace mp {

namespace {

constexpr char kHex[] = "0123456789abcdef";

void append_u_escape(std::string& out, uint32_t unit) {
  char buf[6] = {'\\',
                 'u',
                 kHex[(unit >> 12) & 0xf],
                 kHex[(unit >> 8) & 0xf],
                 kHex[(unit >> 4) & 0xf],
                 kHex[unit & 0xf]};
  out.append(buf, sizeof buf);
}

// Decodes one UTF-8 sequence starting at s[i]. Returns its length (1-4) and
// stores the code point, or returns 0 if the bytes there are not a valid,
// shortest-form encoding of a Unicode scalar value.
size_t decode_utf8(std::string_view s, size_t i, uint32_t& cp) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  size_t len;
  uint32_t min;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
    cp = b0 & 0x1f;
    min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    cp = b0 & 0x0f;
    min = 0x800;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    cp = b0 & 0x07;
    min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  for (size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

bool plain(unsigned char c) {
  return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

void append_quoted(std::string& out, std::string_view s) {
  out.push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    // Runs of characters that need no escape (nearly every string) are
    // copied at once.
    size_t run = i;
    while (run < s.size() && plain(static_cast<unsigned char>(s[run]))) ++run;
    if (run > i) {
      out.append(s.data() + i, run - i);
      i = run;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    switch (c) {
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      case '\b':
        out += "\\b";
        ++i;
        continue;
      case '\f':
        out += "\\f";
        ++i;
        continue;
      default:
        break;
    }
    if (c < 0x80) {  // other control characters and DEL
      append_u_escape(out, c);
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t len = decode_utf8(s, i, cp);
    if (len == 0) {  // not UTF-8: the byte as a lone surrogate (surrogateescape)
      append_u_escape(out, 0xdc00 | c);
      ++i;
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      append_u_escape(out, 0xd800 | (cp >> 10));
      append_u_escape(out, 0xdc00 | (cp & 0x3ff));
    } else {
      append_u_escape(out, cp);
    }
    i += len;
  }
  out.push_back('"');
}

// float.__repr__ of CPython (which json.dumps uses for finite floats).
void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v < 0 ? "-Infinity" : "Infinity";
    return;
  }
  // Where CPython writes positional notation (decimal exponent -4..15, and
  // zero), to_chars' shortest round-trip digits in fixed form are its text
  // (the same digits as the scientific form below), plus ".0" when there is
  // no fraction. Wall-clock times, the bulk of the relay's records, go here.
  const double magnitude = std::fabs(v);
  if (magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16)) {
    char fixed[64];
    const auto r = std::to_chars(fixed, fixed + sizeof fixed, v, std::chars_format::fixed);
    if (r.ec == std::errc()) {
      const std::string_view text(fixed, static_cast<size_t>(r.ptr - fixed));
      out += text;
      if (text.find('.') == std::string_view::npos) out += ".0";
      return;
    }
  }
  // Shortest round-trip digits in scientific form: [-]d[.ddd]e(+|-)XX[X].
  char sci[64];
  const auto res = std::to_chars(sci, sci + sizeof sci, v, std::chars_format::scientific);
  if (res.ec != std::errc()) {  // cannot happen with this buffer size
    out += "0.0";
    return;
  }
  std::string_view text(sci, static_cast<size_t>(res.ptr - sci));
  const size_t e_pos = text.find('e');
  std::string_view mantissa = text.substr(0, e_pos);
  std::string_view exp_text = text.substr(e_pos + 1);
  int exponent = 0;
  {
    std::string_view digits = exp_text;
    const bool negative = !digits.empty() && digits.front() == '-';
    if (!digits.empty() && (digits.front() == '-' || digits.front() == '+'))
      digits.remove_prefix(1);
    std::from_chars(digits.data(), digits.data() + digits.size(), exponent);
    if (negative) exponent = -exponent;
  }
  // CPython switches to exponent notation when decpt = exponent + 1 is
  // <= -4 or > 16. Its exponent form ("1e+16", "1.5e-05") is the same as
  // to_chars' scientific output.
  if (exponent < -4 || exponent >= 16) {
    out += text;
    return;
  }
  bool negative = false;
  if (!mantissa.empty() && mantissa.front() == '-') {
    negative = true;
    mantissa.remove_prefix(1);
  }
  char digit_buf[sizeof sci];  // the mantissa without its point: no allocation
  size_t n_digits = 0;
  for (char ch : mantissa)
    if (ch != '.') digit_buf[n_digits++] = ch;
  const std::string_view digits(digit_buf, n_digits);
  if (negative) out.push_back('-');
  if (exponent < 0) {
    out += "0.";
    out.append(static_cast<size_t>(-exponent - 1), '0');
    out += digits;
    return;
  }
  const size_t int_len = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= int_len) {
    out += digits;
    out.append(int_len - digits.size(), '0');
    out += ".0";
  } else {
    out += digits.substr(0, int_len);
    out.push_back('.');
    out += digits.substr(int_len);
  }
}

template <typename Int>
void append_integer(std::string& out, Int v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<size_t>(res.ptr - buf));
}

}  // namespace

void JsonWriter::begin_object() {
  separator();
  out_.push_back('{');
  need_comma_ = false;
}

void JsonWriter::end_object() {
  out_.push_back('}');
  need_comma_ = true;
}

void JsonWriter::begin_array() {
  separator();
  out_.push_back('[');
  need_comma_ = false;
}

void JsonWriter::end_array() {
  out_.push_back(']');
  need_comma_ = true;
}

void JsonWriter::key(JsonKey k) {
  separator();
  // Checked at compile time: written in place, no scan. (Assembled in a
  // stack buffer and scanned, a key cost ~20 ns, a tenth of a journal
  // record's time.)
  const std::string_view t = k.text();
  const size_t at = out_.size();
  out_.resize(at + t.size() + 4);
  char* p = out_.data() + at;
  p[0] = '"';
  std::memcpy(p + 1, t.data(), t.size());
  p[t.size() + 1] = '"';
  p[t.size() + 2] = ':';
  p[t.size() + 3] = ' ';
  after_key_ = true;
}

void JsonWriter::key_text(std::string_view k) {
  separator();
  append_quoted(out_, k);
  out_.append(": ", 2);
  after_key_ = true;
}

void JsonWriter::value(std::string_view s) {
  separator();
  append_quoted(out_, s);
  need_comma_ = true;
}

void JsonWriter::value(int64_t v) {
  separator();
  append_integer(out_, v);
  need_comma_ = true;
}

void JsonWriter::value(uint64_t v) {
  separator();
  append_integer(out_, v);
  need_comma_ = true;
}

void JsonWriter::value(double v) {
  separator();
  append_double(out_, v);
  need_comma_ = true;
}

void JsonWriter::value(bool v) {
  separator();
  out_ += v ? "true" : "false";
  need_comma_ = true;
}

void JsonWriter::null() {
  separator();
  out_ += "null";
  need_comma_ = true;
}

void JsonWriter::raw(std::string_view json) {
  separator();
  out_ += json;
  need_comma_ = true;
}

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  append_quoted(out, s);
  return out;
}

std::string json_string_bytes(std::string_view decoded) {
  std::string out;
  out.reserve(decoded.size());
  for (size_t i = 0; i < decoded.size(); ++i) {
    const auto b0 = static_cast<unsigned char>(decoded[i]);
    if (b0 == 0xed && decoded.size() - i >= 3) {
      const auto b1 = static_cast<unsigned char>(decoded[i + 1]);
      const auto b2 = static_cast<unsigned char>(decoded[i + 2]);
      if ((b1 == 0xb2 || b1 == 0xb3) && (b2 & 0xc0) == 0x80) {  // U+DC80..U+DCFF
        out.push_back(static_cast<char>(0x80 | ((b1 & 1) << 6) | (b2 & 0x3f)));
        i += 2;
        continue;
      }
    }
    out.push_back(static_cast<char>(b0));
  }
  return out;
}

}  // namespace mp
