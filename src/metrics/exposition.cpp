// Prometheus text format writer (exposition.h).
#include "metrics/exposition.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace mp::metrics {

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

namespace {
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char b[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(b, sizeof b, "%.0f", v);
    return b;
  }
  // Shortest round-trip form, written without an exponent in the usual range
  // ("0.0005", not "5e-04").
  const bool plain = std::fabs(v) >= 1e-6 && std::fabs(v) < 1e15;
  auto r = plain ? std::to_chars(b, b + sizeof b, v, std::chars_format::fixed)
                 : std::to_chars(b, b + sizeof b, v);
  return std::string(b, r.ptr);
}
}  // namespace

void Exposition::header(const std::string& name, const std::string& help, const char* type) {
  if (!seen_.insert(name).second) return;
  out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void Exposition::sample(const std::string& name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ',';
      out_ += labels[i].first + "=\"" + escape_label(labels[i].second) + "\"";
    }
    out_ += '}';
  }
  out_ += ' ' + number(value) + '\n';
}

void Exposition::counter(const std::string& name, const std::string& help, double value,
                         const Labels& labels) {
  header(name, help, "counter");
  sample(name, labels, value);
}

void Exposition::gauge(const std::string& name, const std::string& help, double value,
                       const Labels& labels) {
  header(name, help, "gauge");
  sample(name, labels, value);
}

void Exposition::histogram(const std::string& name, const std::string& help,
                           const std::vector<double>& bounds, const std::vector<uint64_t>& buckets,
                           uint64_t overflow, double sum) {
  header(name, help, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += buckets[i];
    sample(name + "_bucket", {{"le", number(bounds[i])}}, static_cast<double>(cumulative));
  }
  cumulative += overflow;
  sample(name + "_bucket", {{"le", "+Inf"}}, static_cast<double>(cumulative));
  sample(name + "_sum", {}, sum);
  sample(name + "_count", {}, static_cast<double>(cumulative));
}

void LatencyHistogram::observe(double seconds) {
  sum += seconds;
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (seconds <= bounds[i]) {
      ++buckets[i];
      return;
    }
  }
  ++overflow;
}

}  // namespace mp::metrics
