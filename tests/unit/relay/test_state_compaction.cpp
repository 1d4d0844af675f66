// Compacting the relay's state file off the loop (relay/state_compaction.h):
// records the journal writes while the compacted file is being made end up
// in it, an abandoned or failed compaction leaves the file the journal kept
// writing, and no temporary file is left behind. Real files in a temporary
// directory, a real libuv loop and its thread pool.
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "relay/state_compaction.h"
#include "relay/state_journal.h"

using namespace mp;
using namespace mp::relay;

namespace {

StateIdentity identity() {
  StateIdentity id;
  id.relay_ip = *parse_ipv4("192.0.2.10");
  id.port_start = 40000;
  id.port_end = 40100;
  id.nft_table = "mediaproxy";
  return id;
}

SessionState named(const std::string& call_id) {
  SessionState s;
  s.call_id = call_id;
  s.from_tag = "ft";
  s.created = 1796340000.25;
  return s;
}

struct Fixture {
  char dir[32] = "/tmp/mp-compact-XXXXXX";
  std::string path;
  uv_loop_t loop;
  StateJournal journal;
  Fixture() {
    REQUIRE(mkdtemp(dir));
    path = std::string(dir) + "/relay.state";
    uv_loop_init(&loop);
    // The file as a running relay has it: sessions a, b, c.
    std::string content = identity().header() + "\n";
    for (uint64_t id = 1; id <= 3; ++id)
      StateJournal::append_line(content, 'S', id,
                                session_state_to_json(named(std::string(1, 'a' + id - 1))));
    std::string error;
    REQUIRE(journal.rewrite(path, content, error));
  }
  ~Fixture() {
    journal.close();
    uv_loop_close(&loop);
    std::remove(path.c_str());
    rmdir((path + ".compact." + std::to_string(getpid())).c_str());
    rmdir(dir);
  }
  BackgroundCompaction::Snapshot snapshot() {
    return {{1, named("a")}, {2, named("b")}, {3, named("c")}};
  }
  // What a restart would read, as call ids in id order.
  std::string load() {
    LoadedState out;
    std::string error;
    REQUIRE(StateJournal::load(path, identity(), out, error));
    std::string ids;
    for (const auto& [id, s] : out.sessions) ids += s.call_id;
    return ids;
  }
  bool temporary_left() {
    struct stat st;
    return stat((path + ".compact." + std::to_string(getpid())).c_str(), &st) == 0;
  }
  // Records written while the compaction runs: b ends, d starts.
  void meanwhile() {
    journal.put_delete(2);
    journal.put_session(4, session_state_to_json(named("d")));
    std::string error;
    REQUIRE(journal.flush(error));
  }
};

}  // namespace

TEST_CASE("a background compaction keeps what the journal wrote meanwhile", "[relay][state]") {
  Fixture f;
  BackgroundCompaction c(&f.loop);
  std::string error;
  REQUIRE(c.start(f.journal, identity().header(), f.snapshot(), error));
  CHECK(c.running());
  CHECK_FALSE(c.can_start());
  f.meanwhile();
  CHECK(f.load() == "acd");  // the old file has everything until the switch
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK_FALSE(c.running());
  CHECK(c.completed() == 1);
  CHECK(f.load() == "acd");
  CHECK(f.journal.appended() == 0);
  CHECK_FALSE(f.temporary_left());
  // The journal appends to the compacted file from now on.
  f.journal.put_delete(1);
  REQUIRE(f.journal.flush(error));
  CHECK(f.load() == "cd");
}

TEST_CASE("an abandoned compaction leaves the file the journal kept writing", "[relay][state]") {
  Fixture f;
  BackgroundCompaction c(&f.loop);
  std::string error;
  REQUIRE(c.start(f.journal, identity().header(), f.snapshot(), error));
  c.abandon();
  CHECK_FALSE(c.running());
  f.meanwhile();
  uv_run(&f.loop, UV_RUN_DEFAULT);  // the job's thread ends, its file goes
  CHECK(c.completed() == 0);
  CHECK(f.load() == "acd");
  CHECK_FALSE(f.temporary_left());
}

TEST_CASE("a failed compaction is logged, retried later, and loses nothing", "[relay][state]") {
  Fixture f;
  // The temporary file's name is taken by a directory: open() fails.
  REQUIRE(mkdir((f.path + ".compact." + std::to_string(getpid())).c_str(), 0700) == 0);
  BackgroundCompaction c(&f.loop);
  std::string error;
  REQUIRE(c.start(f.journal, identity().header(), f.snapshot(), error));
  f.meanwhile();
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(c.completed() == 0);
  CHECK_FALSE(c.running());
  CHECK_FALSE(c.can_start());  // not before kRetryMs
  CHECK(f.load() == "acd");
  // Appending goes on in the old file, nothing kept aside any more.
  f.journal.put_delete(3);
  REQUIRE(f.journal.flush(error));
  CHECK(f.load() == "ad");
}
