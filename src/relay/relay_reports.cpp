// What the relay reports about itself (relay_engine.h): its Prometheus
// metrics (mediaproxy.8, METRICS) and the summary the dispatcher and the
// management interface read (stream counts, traffic rate).
#include <map>

#include "common/json_writer.h"
#include "relay/kernel_offload.h"
#include "relay/media_pump.h"
#include "relay/relay_engine.h"

namespace mp::relay {

void RelayEngine::write_metrics(metrics::Exposition& out) const {
  uint64_t packets[2][2], bytes[2][2];
  size_t streams = 0, kernel_streams = 0;
  for (int p = 0; p < 2; ++p)
    for (int d = 0; d < 2; ++d) {
      packets[p][d] = ended_packets_[p][d];
      bytes[p][d] = ended_bytes_[p][d];
    }
  for (const auto& [key, s] : sessions_)
    for (const auto& st : s->streams()) {
      if (st->alive()) {
        ++streams;
        if (st->in_kernel(kRtp)) ++kernel_streams;
      }
      for (SubStream k : {kRtp, kRtcp})
        for (Side side : {kCaller, kCallee}) {
          const Leg& l = st->leg(k, side);
          packets[0][side] += l.packets;
          bytes[0][side] += l.bytes;
          packets[1][side] += l.all_kernel_packets();
          bytes[1][side] += l.all_kernel_bytes();
        }
    }
  out.gauge("mediaproxy_relay_sessions", "Sessions on this relay.",
            static_cast<double>(sessions_.size()));
  out.gauge("mediaproxy_relay_streams", "Alive media streams, by forwarding path of their RTP.",
            static_cast<double>(streams - kernel_streams), {{"path", "userspace"}});
  out.gauge("mediaproxy_relay_streams", "", static_cast<double>(kernel_streams),
            {{"path", "kernel"}});
  out.counter("mediaproxy_relay_foreign_packets_total",
              "Datagrams refused by the latching policy (sources other than the parties').",
              static_cast<double>(ctx_.foreign_packets));
  out.counter("mediaproxy_relay_sessions_created_total", "Sessions created.",
              static_cast<double>(sessions_created_));
  out.counter("mediaproxy_relay_sessions_removed_total", "Sessions ended by a remove request.",
              static_cast<double>(sessions_removed_));
  for (const auto& [reason, n] : sessions_expired_)
    out.counter("mediaproxy_relay_sessions_expired_total",
                "Sessions ended by the relay, by the status of the stream that ended them.",
                static_cast<double>(n), {{"reason", reason}});
  static const char* kPath[2] = {"userspace", "kernel"};
  static const char* kDir[2] = {"caller_to_callee", "callee_to_caller"};
  for (int p = 0; p < 2; ++p)
    for (int d = 0; d < 2; ++d) {
      out.counter("mediaproxy_relay_forwarded_packets_total",
                  "Packets forwarded, by path and direction (RTP, RTCP and UDPTL).",
                  static_cast<double>(packets[p][d]), {{"path", kPath[p]}, {"direction", kDir[d]}});
    }
  for (int p = 0; p < 2; ++p)
    for (int d = 0; d < 2; ++d)
      out.counter("mediaproxy_relay_forwarded_bytes_total",
                  "IP-layer bytes forwarded, by path and direction.",
                  static_cast<double>(bytes[p][d]), {{"path", kPath[p]}, {"direction", kDir[d]}});
  out.gauge("mediaproxy_relay_port_pairs", "Port pairs of port_range, by state.",
            static_cast<double>(pool_.free_count()), {{"state", "free"}});
  out.gauge("mediaproxy_relay_port_pairs", "",
            static_cast<double>(pool_.capacity() - pool_.free_count()), {{"state", "used"}});
  out.gauge("mediaproxy_relay_halting", "1 while the relay refuses new sessions (SIGHUP).",
            halting_ ? 1 : 0);
  if (pump_) {
    const uint64_t tproxy = pump_->tproxy_received();
    out.gauge("mediaproxy_relay_tproxy_sockets",
              "Sockets receiving the datagrams of every media port (media_receive): one per IP "
              "family, 0 when each port's own socket receives.",
              static_cast<double>(pump_->tproxy_sockets()));
    out.counter("mediaproxy_relay_received_datagrams_total",
                "Datagrams the user-space path read, by socket: the tproxy socket of "
                "media_receive or a port's own.",
                static_cast<double>(tproxy), {{"socket", "tproxy"}});
    out.counter("mediaproxy_relay_received_datagrams_total", "",
                static_cast<double>(pump_->received() - tproxy), {{"socket", "port"}});
    out.counter("mediaproxy_relay_tproxy_unclaimed_datagrams_total",
                "Datagrams the tproxy socket read for a port without a stream (dropped).",
                static_cast<double>(pump_->tproxy_unclaimed()));
  }
  if (offload_) {
    out.counter("mediaproxy_relay_kernel_handovers_total",
                "Sub-streams (RTP or RTCP of one stream) handed to the kernel.",
                static_cast<double>(offload_->handed_over()));
    out.counter("mediaproxy_relay_kernel_handover_transactions_total",
                "Netlink transactions that carried them (one per media pass at most).",
                static_cast<double>(offload_->batches()));
  }
}

size_t RelayEngine::stream_count() const {
  size_t n = 0;
  for (const auto& [key, s] : sessions_)
    for (const auto& st : s->streams())
      if (st->alive()) ++n;
  return n;
}

std::string RelayEngine::summary_json() const {
  std::map<std::string, int64_t> by_type;
  for (const auto& [key, s] : sessions_)
    for (const auto& st : s->streams())
      if (st->alive()) ++by_type[st->media_type()];
  JsonWriter w;
  w.begin_object();
  w.field("ip", format_ipv4(ctx_.relay_ip));
  if (ctx_.relay_ip6) w.field("ip6", format_ip(*ctx_.relay_ip6));  // absent: no IPv6 media
  w.field("version", std::string(MEDIAPROXY_VERSION));
  w.field("status", std::string(halting_ ? "halting" : "active"));
  w.field("uptime", static_cast<int64_t>(ctx_.now() - started_));
  w.field("session_count", static_cast<int64_t>(sessions_.size()));
  w.key("stream_count");
  w.begin_object();
  for (const auto& [type, n] : by_type) w.field(type, n);
  w.end_object();
  w.key("bps_relayed");
  if (bps_sampled_)
    w.value(bps_relayed_);
  else
    w.value(static_cast<int64_t>(0));
  w.end_object();
  return w.take();
}

}  // namespace mp::relay
