// Unit tests for loading TLS credentials (tls/tls_context.h) from the sample
// set in certs/: what loads, the operator-facing error strings for bad files,
// the non-fatal warnings, and change detection / reload.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "common/config.h"
#include "tls/tls_context.h"
#include "tls_test_support.h"

using namespace mp::tls;
using namespace mp::tls::test;
namespace fs = std::filesystem;

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

std::string load_error(const TlsSettings& s) {
  std::string error;
  auto ctx = TlsContext::load(s, error);
  CHECK_FALSE(ctx);
  return error;
}

bool has_warning(const TlsContext& ctx, const std::string& needle) {
  for (const auto& w : ctx.warnings())
    if (w.find(needle) != std::string::npos) return true;
  return false;
}

std::string all_warnings(const TlsContext& ctx) {
  std::string out;
  for (const auto& w : ctx.warnings()) out += w + "\n";
  return out;
}

}  // namespace

TEST_CASE("TLS context: the sample set loads for both roles", "[tls][context]") {
  auto server = load_ok(settings_for(Role::Server, "dispatcher"));
  CHECK(server->role() == Role::Server);
  CHECK(server->has_crl());
  CHECK(format_subject(server->own_subject()) ==
        "O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy test dispatcher");
  INFO(all_warnings(*server));
  CHECK(server->warnings().empty());
  CHECK_FALSE(server->files_changed());

  auto client = load_ok(settings_for(Role::Client, "relay"));
  CHECK(client->role() == Role::Client);
  CHECK(format_subject(client->own_subject()) ==
        "O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy test relay");
  CHECK(client->warnings().empty());
}

TEST_CASE(
    "TLS context: only the sample management certificate passes the default "
    "management_passport",
    "[tls][context]") {
  auto passport = Passport::parse(mp::kDefaultManagementPassport, ignored);
  REQUIRE(passport);
  CHECK(passport->to_string() == "CN:mediaproxy management*");
  auto management = load_ok(settings_for(Role::Client, "management"));
  CHECK(format_subject(management->own_subject()) ==
        "O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy management");
  CHECK(management->warnings().empty());
  CHECK(passport->accepts(management->own_subject(), ignored));
  // Every relay and dispatcher certificate of the set, whatever its state.
  for (const char* name : {"relay", "dispatcher", "relay-revoked", "relay-otherca"}) {
    auto ctx = load_ok(settings_for(Role::Client, name));
    INFO(name);
    CHECK_FALSE(passport->accepts(ctx->own_subject(), ignored));
  }
}

TEST_CASE("TLS context: spec B.1 file layout", "[tls][context]") {
  TlsSettings s = TlsSettings::from_certs_path("/etc/mediaproxy/tls", "relay", Role::Client);
  CHECK(s.role == Role::Client);
  CHECK(s.ca_file == "/etc/mediaproxy/tls/ca.pem");
  CHECK(s.crl_file == "/etc/mediaproxy/tls/crl.pem");
  CHECK(s.cert_file == "/etc/mediaproxy/tls/relay.crt");
  CHECK(s.key_file == "/etc/mediaproxy/tls/relay.key");
  TlsSettings d = TlsSettings::from_certs_path("tls/", "dispatcher", Role::Server);
  CHECK(d.ca_file == "tls/ca.pem");
  CHECK(d.cert_file == "tls/dispatcher.crt");

  auto ctx = load_ok(TlsSettings::from_certs_path(certs_dir(), "dispatcher", Role::Server));
  CHECK(ctx->has_crl());
}

TEST_CASE("TLS context: unreadable and invalid files are named in the error", "[tls][context]") {
  TlsSettings s = settings_for(Role::Server, "dispatcher");
  s.ca_file = "/nonexistent/ca.pem";
  CHECK(load_error(s) == "cannot read /nonexistent/ca.pem: No such file or directory");

  s = settings_for(Role::Server, "dispatcher");
  s.ca_file = cert_path("dispatcher.key");
  CHECK_THAT(load_error(s),
             Catch::StartsWith(cert_path("dispatcher.key") + ": not a valid CA certificate file"));

  s = settings_for(Role::Server, "dispatcher");
  s.cert_file = "/nonexistent/dispatcher.crt";
  CHECK(load_error(s) == "cannot read /nonexistent/dispatcher.crt: No such file or directory");

  s = settings_for(Role::Server, "dispatcher");
  s.key_file = cert_path("ca.pem");
  CHECK_THAT(load_error(s), Catch::StartsWith(cert_path("ca.pem") + ": not a valid private key"));

  s = settings_for(Role::Server, "dispatcher");
  s.crl_file = cert_path("ca.pem");
  CHECK_THAT(load_error(s), Catch::StartsWith(cert_path("ca.pem") + ": not a valid CRL"));

  s = settings_for(Role::Server, "dispatcher");
  s.ca_file.clear();
  CHECK(load_error(s) == "TLS needs a CA file, a certificate and a key");
}

TEST_CASE("TLS context: own certificate problems", "[tls][context]") {
  // Expired: refused with the date...
  TlsSettings s = settings_for(Role::Client, "relay-expired");
  std::string error = load_error(s);
  CHECK(error == "certificate " + cert_path("relay-expired.crt") +
                     " ('O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy test relay') "
                     "expired on 2021-01-01 00:00:00 UTC");
  // ...unless a test needs to present it.
  s.allow_invalid_own_cert = true;
  auto ctx = load_ok(s);
  CHECK(has_warning(*ctx, "expired on 2021-01-01"));

  // Key of another certificate.
  s = settings_for(Role::Client, "relay");
  s.key_file = cert_path("dispatcher.key");
  CHECK_THAT(load_error(s),
             Catch::StartsWith("key " + cert_path("dispatcher.key") +
                               " does not belong to certificate " + cert_path("relay.crt")));

  // Revoked or from another CA: loads, but says peers will refuse it.
  auto revoked = load_ok(settings_for(Role::Client, "relay-revoked"));
  INFO(all_warnings(*revoked));
  CHECK(has_warning(*revoked, "would be refused by peers"));
  CHECK(has_warning(*revoked, "is revoked by the CRL"));
  auto other = load_ok(settings_for(Role::Client, "relay-otherca"));
  INFO(all_warnings(*other));
  CHECK(has_warning(*other, "is not signed by a trusted CA"));
}

TEST_CASE("TLS context: the CRL is optional", "[tls][context]") {
  TempDir dir;
  TlsSettings s = settings_for(Role::Server, "dispatcher");
  s.crl_file = dir.file("crl.pem");  // does not exist
  auto missing = load_ok(s);
  CHECK_FALSE(missing->has_crl());
  CHECK(has_warning(*missing, "no CRL at " + dir.file("crl.pem")));

  dir.write("crl.pem", "\n");
  auto empty = load_ok(s);
  CHECK_FALSE(empty->has_crl());
  CHECK(has_warning(*empty, "is empty"));

  s.crl_file.clear();
  auto none = load_ok(s);
  CHECK_FALSE(none->has_crl());
  CHECK(has_warning(*none, "no CRL configured"));

  s.crl_file = cert_path("crl-empty.pem");
  auto valid = load_ok(s);
  CHECK(valid->has_crl());
  CHECK(valid->warnings().empty());
}

TEST_CASE("TLS context: change detection and reload", "[tls][context]") {
  TempDir dir;
  for (const char* f : {"ca.pem", "dispatcher.crt", "dispatcher.key"}) dir.copy(f, f);
  dir.copy("crl-empty.pem", "crl.pem");
  TlsSettings s = TlsSettings::from_certs_path(dir.path.string(), "dispatcher", Role::Server);
  std::shared_ptr<const TlsContext> ctx = load_ok(s);
  const TlsContext* first = ctx.get();
  std::string error;
  CHECK_FALSE(ctx->files_changed());
  CHECK(reload_if_changed(ctx, error) == ReloadResult::Unchanged);
  CHECK(ctx.get() == first);

  // A new CRL is picked up.
  dir.copy("crl.pem", "crl.pem");
  CHECK(ctx->files_changed());
  CHECK(reload_if_changed(ctx, error) == ReloadResult::Reloaded);
  CHECK(ctx.get() != first);
  CHECK_FALSE(ctx->files_changed());

  // A broken file keeps the working context and says why, on every try.
  const TlsContext* good = ctx.get();
  dir.write("ca.pem", "not a certificate\n");
  CHECK(reload_if_changed(ctx, error) == ReloadResult::Failed);
  CHECK_THAT(error, Catch::StartsWith(dir.file("ca.pem") + ": not a valid CA certificate file"));
  CHECK(ctx.get() == good);
  CHECK(reload_if_changed(ctx, error) == ReloadResult::Failed);

  // Repaired: reloaded. A file that disappears counts as a change too.
  dir.copy("ca.pem", "ca.pem");
  CHECK(reload_if_changed(ctx, error) == ReloadResult::Reloaded);
  fs::remove(dir.path / "crl.pem");
  CHECK(reload_if_changed(ctx, error) == ReloadResult::Reloaded);
  CHECK_FALSE(ctx->has_crl());
}
