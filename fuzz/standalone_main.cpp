// Stand-alone driver for the fuzz targets when libFuzzer is not available
// (gcc builds, or -Dfuzz=false): it links with one fuzz_*.cpp file and calls
// its LLVMFuzzerTestOneInput().
//
//   fuzz_<name> FILE|DIR...   run every file given (directories: every regular
//                             file inside, recursively), e.g. a crash reproducer
//   fuzz_<name>               run the built-in seeds, then 20,000 inputs made
//                             by a fixed-seed xorshift PRNG (random bytes,
//                             concatenated protocol tokens, mutated seeds), so
//                             the run is deterministic and suitable for CI;
//                             -runs=N makes that N inputs (libFuzzer's flag,
//                             for targets whose inputs are expensive); other
//                             -flag=value arguments are libFuzzer's and are
//                             ignored.
// A violated invariant aborts inside the target; this driver only reports
// how many inputs ran.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

constexpr long kRandomInputs = 20000;

void run_one(std::string_view input) {
  // Copy into an exactly-sized heap buffer so that ASan catches reads past
  // the end, as under libFuzzer.
  std::vector<uint8_t> buf(input.begin(), input.end());
  LLVMFuzzerTestOneInput(buf.empty() ? nullptr : buf.data(), buf.size());
}

bool run_path(const std::filesystem::path& path, size_t& count) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(path, ec)) {
      if (entry.is_regular_file(ec) && !run_path(entry.path(), count)) return false;
    }
    return !ec;
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  std::string data;
  char chunk[65536];
  for (size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;) data.append(chunk, n);
  const bool read_error = std::ferror(f) != 0;
  std::fclose(f);
  if (read_error) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  run_one(data);
  ++count;
  return true;
}

// A string literal with its NUL bytes (all but the terminating one).
template <size_t N>
std::string bin(const char (&text)[N]) {
  return std::string(text, N - 1);
}

const std::vector<std::string>& seeds() {
  static const std::vector<std::string> kSeeds = {
      // tproxy table comments (kernel/tproxy_comment.h), with and without IPv6 and port.
      "mediaproxy relay 10.0.0.1: media ports 40000-59999 to one socket per family at port 33117",
      "mediaproxy relay 10.0.0.1 and 2001:db8::7: media ports 40000-59999 to one socket per "
      "family",
      // IPv6 media items: bracketed (relay protocol), bare (Kamailio's module).
      "audio:[2001:db8::5]:6000:sendrecv:ice=no,video:[::]:0:inactive",
      "audio:2001:db8::23:49170:sendrecv:ice=no,video:::1:5000:recvonly",
      // Module requests (spec A.11).
      "update\r\ntype: request\r\ndialog_id: 1234:5678\r\ncall_id: 3c26700d2b0f@10.0.0.23\r\n"
      "cseq: 101\r\nfrom_uri: alice@example.com\r\nto_uri: bob@example.net\r\nfrom_tag: "
      "9fxced76sl\r\nto_tag: \r\nuser_agent: Blink 5.1.2\r\nsignaling_ip: 203.0.113.7\r\n"
      "media_relay: \r\nmedia: audio:10.0.0.23:49170:sendrecv:ice=no,video:10.0.0.23:51372:"
      "sendrecv:ice=no\r\n\r\n",
      "remove\r\ncall_id: 3c26700d2b0f@10.0.0.23\r\nfrom_tag: 9fxced76sl\r\nto_tag: "
      "8321234356\r\n\r\n",
      "\r\n\r\nupdate\r\ncall_id: x\r\nbad line\r\n\r\nremove\r\ncall_id: x\r\n\r\n",
      // Relay commands (spec B.10).
      "sessions 0\r\n\r\n",
      "remove 3\r\ncall_id: 3c26700d2b0f@10.0.0.23\r\nfrom_tag: 9fxced76sl\r\nto_tag: "
      "8321234356\r\n\r\n",
      "update 18446744073709551616\r\ncall_id: x\r\n\r\n",
      // Media header values (spec A.5).
      "audio:10.0.0.23:49170:sendrecv:ice=no,video:10.0.0.23:51372:sendrecv:ice=no",
      "audio:198.51.100.20:3456:sendrecv:ice=no,video:198.51.100.20:0:sendrecv:ice=no",
      ",audio:0.0.0.0:4000:inactive::x=y:ice=yes,,image:1.2.3.4:65535:RECVONLY",
      "audio:1.2.3.4:1/1:sendrecv:ice",
      // Relay messages and module replies (spec A.6, B.2).
      "0 []",
      "1 192.0.2.5 40002 40006",
      "3 {\"call_id\": \"3c26700d2b0f@10.0.0.23\", \"from_tag\": \"9fxced76sl\"}",
      "expired {\"call_id\": \"x\", \"streams\": []}",
      "ping",
      "pong",
      "192.0.2.5 40000 0",
      "removed",
      "error",
      "None",
      "5 halting",
      // Configuration files.
      "[General]\nrole = combined\n[Relay]\nport_range = 40000:40100\nrelay_ip = 127.0.0.1\n"
      "[Dispatcher]\nlisten_management = 127.0.0.1:25061\n[Metrics]\nlisten = any\n",
      "[Relay]\nport_range = 40001:3\n[Nope]\n= x\n",
      // Addresses.
      "192.0.2.5:40000",
      "10.0.0.0/8",
      "2001:db8::7",
      "[2001:db8:0:1:0:0:0:1]:40000",
      "::ffff:10.0.0.1",
      "[fe80::1%eth0]:1",
      // Strings and doubles for the JSON checks.
      "\xf0\x9f\x98\x80\xc3\xa9\xff\x01\x7f\"\\",
      std::string("\x00\x00\x00\x00\x00\x00\xf0\x3f", 8),  // 1.0
      std::string("\x2d\x43\x1c\xeb\xe2\x36\x1a\x3f", 8),  // 1e-4
      // Management command lines (spec C).
      "summary\r\n sessions\t\r\nversion\nSummary\r\n\r\r\nquit\r\nexit",
      // Datagrams: a STUN binding request, RTP (PCMU), RTCP (receiver report).
      bin("\x00\x01\x00\x08\x21\x12\xa4\x42\x01\x02\x03\x04\x05\x06\x07\x08"
          "\x09\x0a\x0b\x0c\x80\x22\x00\x04\xc0\x57\x00\x00"),
      bin("\x80\x00\x00\x01\x00\x00\x00\xa0\x11\x11\x11\x11\xd5\xd5\xd5\xd5"),
      bin("\x81\xc9\x00\x07\x11\x11\x11\x11"),
      // Latching scripts (fuzz_media_classifier.cpp): SDP, signalling IP and
      // answer known; an attacker's RTP, the NAT's RTP, the attacker again,
      // the NAT's RTCP, then a rebinding to the NAT's next port after silence.
      bin("\xe0\x48\x00\x05\x00\x45\x00\x05\x00\x48\x00\x05\x00\x65\x00\x05"
          "\x00\x47\x00\x30\x00\x47\x00\x01\x00"),
      // Strict, nothing known: an unknown source, then the SDP, the answer.
      bin("\x01\x48\x40\x02\x00\x30\x01\x02\x00\x48\x40\x02\x00\x32\x00\x02"
          "\x00\x48\x40\x3f\x00\x40\x40\x01\x00"),
      // Relay records script (fuzz_relay_records.cpp): expire call 0, update,
      // remove, a relay reconnecting with calls 0 and 1, deferred answers,
      // sessions and summary with odd answers, query.
      bin("\x01\x00{\"call_id\": $0, \"start_time\": 1.5, \"streams\": [{\"status\": "
          "\"closed\"}]}\n\x02\x05\n\x03\x00\n\x09\x01$0,$1,call-9\n\x0a\x00\n\x02\x01\n"
          "\x0b\x00\n\x05\x00[{\"call_id\": \"x\"}]|[ ]\n\x06\x00{\"ip\": 1}|error\n\x07\x02{}\n"),
      // Dialog ids and proxy replies (fuzz_proxy_rpc.cpp).
      "17227946993861",
      "438:10795",
      "-1:-2147483648",
      "{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":\"5f3a9c2e\"}",
      "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":404,\"message\":\"Requested Dialog not "
      "found\"},\"id\":\"1\"}",
      "400 Parse_error",
      // Relay state (fuzz_relay_state.cpp): a session record and a counter
      // checkpoint as a relay writes them.
      "{\"call_id\": \"aa40001-call@127.0.0.2\", \"from_tag\": \"Aaa40001\", \"to_tag\": "
      "\"Baa40001\", \"from_"
      "uri\": \"alice@example.com\", \"to_uri\": \"bob@example.net\", \"caller_ua\": \"Caller UA "
      "1.0\", \"cal"
      "lee_ua\": \"Callee UA 2.0\", \"username\": null, \"strict\": null, \"owner\": 1, "
      "\"created\": 1796341"
      "634.436388, \"start\": 1796341634.4371212, \"ended\": null, \"cseq\": [1, 0], "
      "\"prev_cseq\": null,"
      " \"offers\": [{\"cseq\": [1, 0], \"by\": 0, \"streams\": [0]}], \"streams\": [{\"type\": "
      "\"audio\", \"sta"
      "tus\": \"active\", \"alive\": true, \"ports\": [45000, 45002], \"created\": "
      "1796341634.436407, \"sta"
      "rt\": 1796341634.4371212, \"confirmed\": 1796341634.4374073, \"end\": null, "
      "\"first_media\": 1796"
      "341634.4384072, \"activity\": 1796341634.5504072, \"hold_since\": 1796287021.5174072, "
      "\"wait\": "
      "0, \"codec\": [\"G711u\", \"G711u\"], \"strict\": null, \"party\": [{\"k\": true, \"ip\": "
      "\"127.0.0.2\", \""
      "port\": 33630, \"dir\": 0, \"since\": 1796341634.436407, \"sig\": \"127.0.0.2\"}, {\"k\": "
      "true, \"ip\":"
      " \"127.0.0.3\", \"port\": 38442, \"dir\": 0, \"since\": 1796341634.4374073, \"sig\": "
      "\"127.0.0.3\"}], "
      "\"leg\": [{\"l\": true, \"r\": \"127.0.0.2:33630\", \"ssrc\": 268435457, \"ep\": 1, \"fe\": "
      "0, \"gm\": tru"
      "e, \"p\": 7, \"b\": 1400, \"d\": 0, \"f\": 0, \"ms\": 7, \"kp\": 0, \"kb\": 0, \"klp\": 0, "
      "\"klb\": 0, \"ls\":"
      " 1796341634.5504072}, {\"l\": true, \"r\": \"127.0.0.3:38442\", \"ssrc\": 285278466, "
      "\"ep\": 1, \"fe\""
      ": 0, \"gm\": true, \"p\": 6, \"b\": 1200, \"d\": 1, \"f\": 0, \"ms\": 7, \"kp\": 0, \"kb\": "
      "0, \"klp\": 0, \""
      "klb\": 0, \"ls\": 1796341634.5504072}, {\"l\": true, \"r\": \"127.0.0.2:39714\", \"ep\": 1, "
      "\"fe\": 1, "
      "\"gm\": true, \"p\": 1, \"b\": 60, \"d\": 0, \"f\": 0, \"ms\": 1, \"kp\": 0, \"kb\": 0, "
      "\"klp\": 0, \"klb\": 0"
      ", \"ls\": 1796341634.5504072}, {\"l\": true, \"r\": \"127.0.0.3:59979\", \"ep\": 1, \"fe\": "
      "1, \"gm\": t"
      "rue, \"p\": 0, \"b\": 0, \"d\": 1, \"f\": 0, \"ms\": 1, \"kp\": 0, \"kb\": 0, \"klp\": 0, "
      "\"klb\": 0, \"ls\": "
      "1796341634.5504072}]}]}",
      "1 1796341634663 7 1400 0 0 7 6 1200 1 0 7 7 420 0 0 7 6 360 1 0 7",
      "",
  };
  return kSeeds;
}

const char* const kTokens[] = {
    "\r\n",
    "\r",
    "\n",
    ": ",
    ":",
    ",",
    " ",
    "=",
    "update",
    "remove",
    "sessions",
    "summary",
    "call_id",
    "from_tag",
    "media",
    "to_tag",
    "audio",
    "video",
    "[",
    "]",
    "::",
    "2001:db8::",
    "families",
    "0.0.0.0",
    "10.0.0.23",
    "255.255.255.255",
    "256.1.1.1",
    "49170",
    "65535",
    "65536",
    "0",
    "sendrecv",
    "sendonly",
    "recvonly",
    "inactive",
    "ice=yes",
    "ice=no",
    "expired ",
    "ping",
    "pong",
    "error",
    "removed",
    "None",
    "halting",
    "{",
    "}",
    "\"",
    "\\",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "/",
    "\xc3\xa9",
    "\xf0\x9f\x98\x80",
    "\xff",
    "\xed\xa0\x80",
};

class XorShift {
 public:
  explicit XorShift(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }

 private:
  uint64_t state_;
};

std::string random_bytes(XorShift& rng) {
  std::string s(rng.below(129), '\0');
  for (char& c : s) c = static_cast<char>(rng.next() >> 56);
  return s;
}

std::string random_tokens(XorShift& rng) {
  std::string s;
  const size_t n = rng.below(40);
  for (size_t i = 0; i < n; ++i) s += kTokens[rng.below(std::size(kTokens))];
  return s;
}

std::string mutated_seed(XorShift& rng) {
  std::string s = seeds()[rng.below(seeds().size())];
  const size_t mutations = 1 + rng.below(4);
  for (size_t m = 0; m < mutations; ++m) {
    switch (rng.below(5)) {
      case 0:  // overwrite a byte
        if (!s.empty()) s[rng.below(s.size())] = static_cast<char>(rng.next() >> 56);
        break;
      case 1:  // insert a token
        s.insert(rng.below(s.size() + 1), kTokens[rng.below(std::size(kTokens))]);
        break;
      case 2:  // erase a range
        if (!s.empty()) {
          const size_t at = rng.below(s.size());
          s.erase(at, 1 + rng.below(8));
        }
        break;
      case 3:  // duplicate a range
        if (!s.empty()) {
          const size_t at = rng.below(s.size());
          s.insert(at, s.substr(at, 1 + rng.below(16)));
        }
        break;
      default:  // truncate
        s.resize(rng.below(s.size() + 1));
        break;
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  size_t count = 0;
  long random_inputs = kRandomInputs;
  std::vector<const char*> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.substr(0, 6) == "-runs=") {
      char* end = nullptr;
      random_inputs = std::strtol(argv[i] + 6, &end, 10);
      if (*end != '\0' || random_inputs < 0) {
        std::fprintf(stderr, "%s: bad %s\n", argv[0], argv[i]);
        return 2;
      }
    } else if (arg.size() < 2 || arg[0] != '-') {
      paths.push_back(argv[i]);
    }
  }
  if (!paths.empty()) {
    for (const char* path : paths)
      if (!run_path(path, count)) return 1;
    std::fprintf(stderr, "%s: ran %zu input(s)\n", argv[0], count);
    return 0;
  }
  for (const std::string& seed : seeds()) {
    run_one(seed);
    ++count;
  }
  XorShift rng(0x2545f4914f6cdd1dull);
  for (long i = 0; i < random_inputs; ++i) {
    switch (i % 3) {
      case 0:
        run_one(random_bytes(rng));
        break;
      case 1:
        run_one(random_tokens(rng));
        break;
      default:
        run_one(mutated_seed(rng));
        break;
    }
    ++count;
  }
  std::fprintf(stderr, "%s: ran %zu built-in input(s), all invariants held\n", argv[0], count);
  return 0;
}
