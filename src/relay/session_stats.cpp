// The statistics record of a session (spec D.13): the JSON object returned for
// `remove`, sent in `expired` reports and listed by `sessions`. Key order,
// value types and number formatting follow the original exactly, because
// accounting scripts and the AG web page read these records. Keys this
// implementation adds come after the original ones.
#include <algorithm>
#include <cmath>

#include "common/json_writer.h"
#include "relay/session.h"

namespace mp::relay {

std::string Session::stats_json() const {
  const double now = RelayContext::wall_now();
  const double end = ended_wall_.value_or(now);
  const int64_t duration =
      start_wall_ ? static_cast<int64_t>(std::max(0.0, end - *start_wall_)) : 0;

  std::vector<const MediaStream*> reported;
  for (const auto& st : streams_)
    if (st->start_wall) reported.push_back(st.get());
  std::stable_sort(
      reported.begin(), reported.end(),
      [](const MediaStream* a, const MediaStream* b) { return *a->start_wall < *b->start_wall; });

  std::string out;
  out.reserve(1024);  // one allocation for a typical two-stream record
  JsonWriter w(out);
  w.begin_object();
  w.field("call_id", call_id_);
  w.field("from_tag", from_tag_);
  w.field("from_uri", from_uri_);
  w.key("to_tag");
  if (to_tag_.empty())
    w.null();
  else
    w.value(to_tag_);
  w.field("to_uri", to_uri_);
  w.field("start_time", start_wall_);
  w.field("duration", duration);
  w.field("caller_ua", caller_ua_.empty() ? std::string_view("Unknown") : caller_ua_);
  w.field("callee_ua", callee_ua_.empty() ? std::string_view("Unknown") : callee_ua_);
  w.field("username", username_);
  w.key("streams");
  w.begin_array();
  for (const MediaStream* st : reported) {
    const int64_t start_rel = static_cast<int64_t>(
        std::max(0.0, *st->start_wall - start_wall_.value_or(*st->start_wall)));
    int64_t end_rel;
    if (st->status() == "rejected")
      end_rel = start_rel;
    else if (st->alive())
      end_rel = duration;
    else
      end_rel = std::min<int64_t>(
          static_cast<int64_t>(std::max(0.0, st->end_wall.value_or(end) - *start_wall_)), duration);
    uint64_t bytes[2], packets[2], kbytes[2], kpackets[2];
    for (Side s : {kCaller, kCallee}) {
      bytes[s] = st->leg(kRtp, s).total_bytes() + st->leg(kRtcp, s).total_bytes();
      packets[s] = st->leg(kRtp, s).total_packets() + st->leg(kRtcp, s).total_packets();
      kbytes[s] = st->leg(kRtp, s).all_kernel_bytes() + st->leg(kRtcp, s).all_kernel_bytes();
      kpackets[s] = st->leg(kRtp, s).all_kernel_packets() + st->leg(kRtcp, s).all_kernel_packets();
    }
    auto remote = [st](Side s) {
      const Leg& l = st->leg(kRtp, s);
      return l.learned ? format_ip_endpoint(l.remote) : std::string("Unknown");
    };
    w.begin_object();
    w.field("media_type", st->media_type());
    w.field("status", st->status());
    w.field("timeout_wait", static_cast<int64_t>(st->timeout_wait));
    w.field("caller_codec", st->codec[kCaller]);
    w.field("callee_codec", st->codec[kCallee]);
    w.field("start_time", start_rel);
    w.field("end_time", end_rel);
    w.key("post_dial_delay");
    if (st->first_media)
      w.value(*st->first_media - st->created);
    else
      w.null();
    w.field("caller_bytes", bytes[kCaller]);
    w.field("callee_bytes", bytes[kCallee]);
    w.field("caller_packets", packets[kCaller]);
    w.field("callee_packets", packets[kCallee]);
    w.field("caller_local", format_ip_endpoint(st->local(kCaller)));
    w.field("callee_local", format_ip_endpoint(st->local(kCallee)));
    w.field("caller_remote", remote(kCaller));
    w.field("callee_remote", remote(kCallee));
    // Additions of this implementation, after the keys AG tools know: the
    // share of the counters above that the kernel forwarded, and where the
    // RTP sub-stream is forwarded now.
    w.field("caller_kernel_packets", kpackets[kCaller]);
    w.field("callee_kernel_packets", kpackets[kCallee]);
    w.field("caller_kernel_bytes", kbytes[kCaller]);
    w.field("callee_kernel_bytes", kbytes[kCallee]);
    const bool kernel = st->in_kernel(kRtp) || kpackets[kCaller] + kpackets[kCallee] > 0;
    w.field("forwarding", std::string(kernel ? "kernel" : "userspace"));
    // Datagrams the latching policy refused (other sources), per party's port.
    w.field("caller_foreign_packets", st->foreign_packets(kCaller));
    w.field("callee_foreign_packets", st->foreign_packets(kCallee));
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return out;
}

std::string Session::listing_json() const {
  std::string json = stats_json();
  if (dialog_id_.empty() || json.empty() || json.back() != '}') return json;
  json.pop_back();
  json += ", \"dialog_id\": ";
  json += json_quote(dialog_id_);  // escaped as every other string of the record
  json += '}';
  return json;
}

}  // namespace mp::relay
