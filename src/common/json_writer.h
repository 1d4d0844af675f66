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

namespace mp {

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
  void key(std::string_view k);  // inside an object, before each value

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
  void field(std::string_view k, const T& v) {
    key(k);
    value(v);
  }
  template <typename T>
  void field(std::string_view k, const std::optional<T>& v) {
    key(k);
    if (v)
      value(*v);
    else
      null();
  }

  const std::string& str() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void separator();
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
