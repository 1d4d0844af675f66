// Offer/answer state machine of a relayed session (session.h).
#include "relay/session.h"

#include <algorithm>

#include "common/log.h"

namespace mp::relay {

using protocol::MediaItem;

Session::Session(RelayContext& ctx, const UpdateRequest& first, uint64_t owner)
    : ctx_(ctx),
      call_id_(first.call_id),
      from_tag_(first.from_tag),
      from_uri_(first.from_uri),
      to_uri_(first.to_uri),
      username_(first.username),
      owner_(owner),
      created_(ctx.now()) {}

bool Session::update(const UpdateRequest& req, std::string& reply, std::string& error) {
  const bool caller_cseq = req.from_tag == from_tag_;
  // Spec D.2: a request from the caller or a reply from the callee travels
  // downstream and carries the caller's SDP.
  const bool downstream = (req.from_tag != from_tag_) != req.is_request;
  const Side party = downstream ? kCaller : kCallee;
  const CSeqPair old = cseq_.value_or(CSeqPair{0, 0});
  const CSeqPair c = caller_cseq ? CSeqPair{req.cseq, old.second} : CSeqPair{old.first, req.cseq};

  if (caller_cseq && to_tag_.empty() && !req.to_tag.empty()) to_tag_ = req.to_tag;
  if (dialog_id_.empty() && !req.dialog_id.empty()) {
    dialog_id_ = req.dialog_id;
    if (ctx_.state) ctx_.state->session_changed(this);
  }
  std::string& ua = downstream ? caller_ua_ : callee_ua_;
  if (ua.empty()) ua = req.user_agent;

  static const std::vector<MediaItem> kNoMedia;
  const std::vector<MediaItem>& media = req.media ? *req.media : kNoMedia;
  if (req.strict_latching) strict_latching_ = req.strict_latching;
  const IpAddress signaling = parse_ip(req.caller_ip).value_or(IpAddress{});

  if (!cseq_ || c > *cseq_) {
    if (!media.empty() && !apply_offer(c, party, media, signaling, req.reply_family, error))
      return false;
  } else if (c == *cseq_) {
    if (offers_.at(c).offerer == party) {
      LOG_DEBUG("session %s: retransmitted offer (cseq %lld), answered as before",
                log_safe(call_id_).c_str(), static_cast<long long>(req.cseq));
    } else if (!apply_answer(c, party, req, error)) {
      return false;
    }
  } else {
    LOG_DEBUG("session %s: update with old cseq %lld ignored", log_safe(call_id_).c_str(),
              static_cast<long long>(req.cseq));
  }
  if (strict_latching_)
    for (auto& st : streams_) st->set_strict_latching(strict_latching_);
  reply = local_media(downstream, req.cseq, caller_cseq);
  return true;
}

bool Session::apply_offer(const CSeqPair& c, Side party, const std::vector<MediaItem>& media,
                          const IpAddress& signaling, std::optional<IpAddress::Family> reply_family,
                          std::string& error) {
  Offer fresh{party, {}};
  const Offer* current = cseq_ ? &offers_.at(*cseq_) : nullptr;
  const size_t first_new = streams_.size();
  for (const MediaItem& item : media) {
    // Each side's relay sockets have the family of the party on that side:
    // the offerer's from its address, the answerer's as asked (a bridge) or
    // the same.
    MediaStream::Families families;
    families[party] = item.ip.family;
    families[other(party)] = reply_family.value_or(item.ip.family);
    if (!ctx_.serves(families[kCaller]) || !ctx_.serves(families[kCallee])) {
      error = "IPv6 media asked of a relay without an IPv6 address (relay_ip)";
      streams_.resize(first_new);
      return false;
    }
    MediaStream* st = nullptr;
    if (current) {
      for (MediaStream* cand : current->streams) {
        if (!cand->alive() || cand->media_type() != item.type) continue;
        if (cand->family(kCaller) != families[kCaller] ||
            cand->family(kCallee) != families[kCallee])
          continue;  // a party changed family: new sockets, new ports
        if (std::find(fresh.streams.begin(), fresh.streams.end(), cand) != fresh.streams.end())
          continue;
        const PartySdp& o = cand->sdp(party);
        if (!o.known) continue;
        const bool same = item.ip == o.ip && item.port == o.port;
        const bool old_hold = item.ip.is_any() && item.port == o.port;
        const bool disabled = item.ip == o.ip && item.port == 0;
        if (same || old_hold || disabled) {
          st = cand;
          break;
        }
      }
    }
    if (st) {
      st->update_hold(party, item.direction, item.ip);
      st->sdp(party).ice = item.ice;
      st->sdp(party).asymmetric = item.asymmetric;
      if (!signaling.is_any()) st->sdp(party).signaling_ip = signaling;
    } else {
      std::unique_ptr<MediaStream> created;
      if (item.port == 0) {
        created = MediaStream::create_disabled(ctx_, item.type, families);
      } else {
        created = MediaStream::create(ctx_, item.type, families, error);
        if (!created) {
          // Undo: streams made for this offer are not referenced anywhere yet.
          streams_.resize(first_new);
          return false;
        }
      }
      st = created.get();
      st->set_session(this);
      PartySdp& p = st->sdp(party);
      p.known = true;
      p.ip = item.ip;
      p.port = item.port;
      p.ice = item.ice;
      p.asymmetric = item.asymmetric;
      p.known_since = ctx_.now();
      p.signaling_ip = signaling;
      st->update_hold(party, item.direction, item.ip);
      streams_.push_back(std::move(created));
    }
    if (item.port == 0) st->close("closed");
    fresh.streams.push_back(st);
  }
  if (previous_cseq_) {
    close_unless_in(offers_.at(*previous_cseq_), *current, &fresh);
    offers_.erase(*previous_cseq_);
  }
  previous_cseq_ = cseq_;
  cseq_ = c;
  offers_[c] = std::move(fresh);
  return true;
}

bool Session::apply_answer(const CSeqPair& c, Side party, const UpdateRequest& req,
                           std::string& error) {
  Offer& cur = offers_.at(c);
  const IpAddress signaling = parse_ip(req.caller_ip).value_or(IpAddress{});
  static const std::vector<MediaItem> kNoMedia;
  const std::vector<MediaItem>& media = req.media ? *req.media : kNoMedia;
  // Stream i of the answer is stream `first + i` of the offer.
  const size_t first = req.media_index ? req.media_index - 1 : 0;
  if (req.media_index && (media.size() > 1 || first >= cur.streams.size())) {
    error = "answer for stream " + std::to_string(req.media_index) + " of an offer with " +
            std::to_string(cur.streams.size()) + " stream(s)";
    return false;
  }
  for (size_t i = 0; i < media.size() && first + i < cur.streams.size(); ++i) {
    if (cur.streams[first + i]->media_type() != media[i].type) {
      error = "answer stream " + std::to_string(first + i + 1) + " is '" + media[i].type +
              "' but the offer had '" + cur.streams[first + i]->media_type() + "'";
      return false;
    }
  }
  const double wall = RelayContext::wall_now();
  const double now = ctx_.now();
  if (!start_wall_) start_wall_ = wall;
  const bool final_answer = !req.to_tag.empty();
  for (MediaStream* st : cur.streams) {
    if (!st->start_wall) st->start_wall = wall;
    if (final_answer && !st->confirmed) st->confirmed = now;
  }
  if (media.empty()) return true;  // e.g. 200 OK without SDP: only the times change
  if (req.media_index) {
    answer_stream(cur.streams[first], party, media[0], signaling);
  } else {
    for (size_t i = media.size(); i < cur.streams.size(); ++i) cur.streams[i]->close("rejected");
    for (size_t i = 0; i < std::min(media.size(), cur.streams.size()); ++i)
      answer_stream(cur.streams[i], party, media[i], signaling);
  }
  if (previous_cseq_) {
    close_unless_in(offers_.at(*previous_cseq_), cur, nullptr);
    offers_.erase(*previous_cseq_);
    previous_cseq_.reset();
  }
  return true;
}

void Session::answer_stream(MediaStream* st, Side party, const MediaItem& item,
                            const IpAddress& signaling) {
  if (item.port == 0) {
    st->close("rejected");
    return;
  }
  if (!st->alive()) return;
  if (item.ip.family != st->family(party))
    LOG_LIMITED(Warning, nullptr,
                "session %s: the %s answered with an IPv%c address for an IPv%c relay port "
                "(a bridge the offer did not ask for): it cannot be reached",
                log_safe(call_id_).c_str(), party == kCaller ? "caller" : "callee",
                family_digit(item.ip.family), family_digit(st->family(party)));
  st->update_hold(party, item.direction, item.ip);
  PartySdp& p = st->sdp(party);
  p.ice = item.ice;
  p.asymmetric = item.asymmetric;
  if (!signaling.is_any()) p.signaling_ip = signaling;
  if (!p.known || p.ip.is_any()) {
    p.known = true;
    p.ip = item.ip;
    p.port = item.port;
    p.known_since = ctx_.now();
  } else if (p.port != item.port || (p.ip != item.ip && !item.ip.is_any())) {
    LOG_DEBUG("session %s: %s moved to %s, relearning its address", log_safe(call_id_).c_str(),
              party == kCaller ? "caller" : "callee",
              format_ip_endpoint(IpEndpoint{item.ip, item.port}).c_str());
    st->reset_party(party, item.ip, item.port);
  }
}

void Session::close_unless_in(const Offer& old, const Offer& keep1, const Offer* keep2) {
  for (MediaStream* st : old.streams) {
    auto in = [st](const Offer& o) {
      return std::find(o.streams.begin(), o.streams.end(), st) != o.streams.end();
    };
    if (!in(keep1) && !(keep2 && in(*keep2))) st->close("closed");
  }
}

std::string Session::local_media(bool downstream, int64_t cseq, bool caller_cseq) const {
  const Offer* chosen = nullptr;
  for (const auto& [key, offer] : offers_) {  // ascending: the last match is the latest
    if ((caller_cseq ? key.first : key.second) == cseq) chosen = &offer;
  }
  if (!chosen) return "None";
  const Side facing = downstream ? kCallee : kCaller;
  // One address per reply: the family of the relay side facing the party
  // this SDP goes to (of the offer's first stream; an offer is one family).
  const IpAddress::Family family =
      chosen->streams.empty() ? IpAddress::Family::V4 : chosen->streams.front()->family(facing);
  std::string out = format_ip(ctx_.reply_address(family));
  for (const MediaStream* st : chosen->streams) {
    out += ' ';
    out += std::to_string(st->alive() ? st->reply_port(facing) : 0);
  }
  return out;
}

void Session::close_all(const std::string& status) {
  for (auto& st : streams_) st->close(status);
  mark_ended();
}

void Session::mark_ended() {
  if (!ended_wall_) ended_wall_ = RelayContext::wall_now();
}

bool Session::alive() const {
  for (const auto* key : {&cseq_, &previous_cseq_}) {
    if (!*key) continue;
    for (const MediaStream* st : offers_.at(**key).streams)
      if (st->alive()) return true;
  }
  return false;
}

}  // namespace mp::relay
