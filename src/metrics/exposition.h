// Prometheus text exposition format (version 0.0.4) writer, and the update
// latency histogram the dispatcher keeps.
//
// Owns the formatting rules: one HELP and TYPE line per metric family, label
// values escaped (backslash, double quote, newline), counters suffixed
// _total, histograms as cumulative _bucket lines with le="+Inf", _sum and
// _count. Pure code, no I/O.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace mp::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  void counter(const std::string& name, const std::string& help, double value,
               const Labels& labels = {});
  void gauge(const std::string& name, const std::string& help, double value,
             const Labels& labels = {});
  // `bounds` ascending; `buckets[i]` counts observations <= bounds[i]
  // (non-cumulative); `overflow` those above the last bound.
  void histogram(const std::string& name, const std::string& help,
                 const std::vector<double>& bounds, const std::vector<uint64_t>& buckets,
                 uint64_t overflow, double sum);
  const std::string& text() const { return out_; }

 private:
  void header(const std::string& name, const std::string& help, const char* type);
  void sample(const std::string& name, const Labels& labels, double value);
  std::string out_;
  std::set<std::string> seen_;
};

// Fixed-bucket latency histogram in seconds.
struct LatencyHistogram {
  std::vector<double> bounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5};
  std::vector<uint64_t> buckets = std::vector<uint64_t>(10, 0);
  uint64_t overflow = 0;
  double sum = 0;
  void observe(double seconds);
};

std::string escape_label(const std::string& v);

}  // namespace mp::metrics
