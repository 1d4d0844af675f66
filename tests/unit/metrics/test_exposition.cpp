// Prometheus text exposition (metrics/exposition.h): the exact lines a
// scraper parses.
#include <catch2/catch.hpp>

#include "metrics/exposition.h"

using mp::metrics::Exposition;

TEST_CASE("counters and gauges carry one HELP/TYPE header per family", "[metrics]") {
  Exposition e;
  e.counter("x_total", "Things.", 3, {{"kind", "a"}});
  e.counter("x_total", "Things.", 4.5, {{"kind", "b"}});
  e.gauge("y", "Level.", 0);
  CHECK(e.text() ==
        "# HELP x_total Things.\n# TYPE x_total counter\n"
        "x_total{kind=\"a\"} 3\n"
        "x_total{kind=\"b\"} 4.5\n"
        "# HELP y Level.\n# TYPE y gauge\n"
        "y 0\n");
}

TEST_CASE("label values are escaped", "[metrics]") {
  Exposition e;
  e.gauge("z", "Z.", 1, {{"v", "a\"b\\c\nd"}});
  CHECK(e.text().find("z{v=\"a\\\"b\\\\c\\nd\"} 1\n") != std::string::npos);
}

TEST_CASE("histograms are cumulative with +Inf, sum and count", "[metrics]") {
  mp::metrics::LatencyHistogram h;
  h.observe(0.0004);
  h.observe(0.003);
  h.observe(0.003);
  h.observe(2.0);
  Exposition e;
  e.histogram("lat_seconds", "Latency.", h.bounds, h.buckets, h.overflow, h.sum);
  const std::string& t = e.text();
  CHECK(t.find("# TYPE lat_seconds histogram\n") != std::string::npos);
  CHECK(t.find("lat_seconds_bucket{le=\"0.0005\"} 1\n") != std::string::npos);
  CHECK(t.find("lat_seconds_bucket{le=\"0.0025\"} 1\n") != std::string::npos);
  CHECK(t.find("lat_seconds_bucket{le=\"0.005\"} 3\n") != std::string::npos);
  CHECK(t.find("lat_seconds_bucket{le=\"0.5\"} 3\n") != std::string::npos);
  CHECK(t.find("lat_seconds_bucket{le=\"+Inf\"} 4\n") != std::string::npos);
  CHECK(t.find("lat_seconds_count 4\n") != std::string::npos);
  CHECK(t.find("lat_seconds_sum 2.0064") != std::string::npos);
}
