// A JSON writer whose output is byte-identical to Python's json.dumps() with
// default arguments, as the original MediaProxy emits it (spec D.13):
// separators ", " and ": ", non-ASCII escaped as \uXXXX (surrogate pairs above
// U+FFFF), `null`, `true`/`false`, floats in shortest round-trip form with a
// ".0" on integral values. Peers such as the AG web page and accounting
// scripts parse these records, and some compare them textually.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mp {

class JsonWriter {
 public:
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
  std::string out_;
  bool need_comma_ = false;
  bool after_key_ = false;
};

// Escapes a string exactly as json.dumps(ensure_ascii=True), with the quotes.
std::string json_quote(std::string_view s);

}  // namespace mp
