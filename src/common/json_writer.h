// A JSON writer whose output is byte-identical to Python's json.dumps() with
// default arguments, as the original MediaProxy emits it (spec D.13):
// separators ", " and ": ", non-ASCII escaped as \uXXXX (surrogate pairs above
// U+FFFF), `null`, `true`/`false`, floats in shortest round-trip form with a
// ".0" on integral values. Peers such as the AG web page and accounting
// scripts parse these records, and some compare them textually.
//
// Strings are byte strings (a call-id is whatever the SIP peer sent): a byte
// that is not part of valid UTF-8 is written as the lone surrogate \udcXX
// (XX = the byte), as Python writes a str decoded with "surrogateescape".
// The output stays printable ASCII and json.loads() reads it; the bytes come
// back with .encode("utf-8", "surrogateescape") in Python and with
// json_string_bytes() here, so every byte string survives a round trip.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace mp {

// A key written as a string literal: checked when the program is compiled
// (it must need no escape), so that JsonWriter copies it without scanning
// it. Keys of records written per call (state journal, statistics) are all
// literals; others go through the runtime overloads, which escape them.
class JsonKey {
 public:
  template <size_t N>
  consteval JsonKey(const char (&k)[N]) : text_(k, N - 1) {  // NOLINT: implicit on purpose
    for (char c : text_)
      if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
        throw "a JSON key literal must need no escape";  // a compile error
  }
  constexpr std::string_view text() const { return text_; }

 private:
  std::string_view text_;
};

// What the runtime key overloads take: strings, not string literals (those
// are JsonKeys).
template <typename S>
concept RuntimeJsonKey = std::is_convertible_v<const S&, std::string_view> && !std::is_array_v<S>;

class JsonWriter {
 public:
  JsonWriter() : out_(own_) {}
  // Appends to `target` (a record buffer, say) instead of a string of its
  // own; str() and take() then refer to `target`.
  explicit JsonWriter(std::string& target) : out_(target) {}
  JsonWriter(const JsonWriter&) = delete;
  JsonWriter& operator=(const JsonWriter&) = delete;

  void begin_object();
  void end_object();
  void begin_array();
  void end_array();
  // Inside an object, before each value.
  void key(JsonKey k);
  template <RuntimeJsonKey S>
  void key(const S& k) {
    key_text(std::string_view(k));
  }

  void value(std::string_view s);
  void value(const char* s) { value(std::string_view(s)); }
  void value(const std::string& s) { value(std::string_view(s)); }
  void value(int64_t v);
  void value(uint64_t v);
  void value(int v) { value(static_cast<int64_t>(v)); }
  void value(double v);
  void value(bool v);
  void null();
  // Inserts already-serialised JSON text as a value.
  void raw(std::string_view json);

  template <typename T>
  void field(JsonKey k, const T& v) {
    key(k);
    value(v);
  }
  template <typename T>
  void field(JsonKey k, const std::optional<T>& v) {
    key(k);
    optional_value(v);
  }
  template <RuntimeJsonKey S, typename T>
  void field(const S& k, const T& v) {
    key(k);
    value(v);
  }
  template <RuntimeJsonKey S, typename T>
  void field(const S& k, const std::optional<T>& v) {
    key(k);
    optional_value(v);
  }

  const std::string& str() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void key_text(std::string_view k);  // escapes what needs it
  template <typename T>
  void optional_value(const std::optional<T>& v) {
    if (v)
      value(*v);
    else
      null();
  }
  // ", " before every item but the first of an object or array, nothing
  // right after a key. Inline: it runs before every key and value.
  void separator() {
    if (after_key_)
      after_key_ = false;
    else if (need_comma_)
      out_.append(", ", 2);
  }
  std::string own_;
  std::string& out_;
  bool need_comma_ = false;
  bool after_key_ = false;
};

// Escapes a string exactly as json.dumps(ensure_ascii=True), with the quotes.
std::string json_quote(std::string_view s);

// The original bytes of a string written by json_quote(), given the UTF-8
// that a JSON parser (rapidjson: GetString() with GetStringLength()) decoded
// from it: each lone surrogate U+DC80..U+DCFF, which the parser encodes as
// the three bytes ED B2..B3 80..BF, becomes the byte 0x80..0xFF again.
std::string json_string_bytes(std::string_view decoded);

}  // namespace mp
